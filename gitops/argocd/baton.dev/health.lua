-- Argo CD health of baton.dev/v1alpha1 Clusters and Meshes (see docs/gitops.md): one script,
-- installed under both kinds' keys, so the two kinds read their status the same way.
-- Lua 5.1 as run by Argo CD; reads status.observedGeneration, status.phase, status.message,
-- status.progress (Mesh) and the Ready / Stalled / Degraded / Paused / AwaitingApproval
-- conditions.
local hs = {}

local function text(...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "string" and v ~= "" then
      return v
    end
  end
  return ""
end

local function condition(status, name)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if type(c) == "table" and c.type == name then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local status = obj.status
if type(status) ~= "table" then
  hs.status = "Progressing"
  hs.message = "Waiting for the Baton operator to report status"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Baton operator to observe generation " .. tostring(generation)
  return hs
end

local mesh = obj.kind == "Mesh"
local phase = text(status.phase, "Pending")
local progress = ""
if mesh and text(status.progress) ~= "" then
  progress = " (" .. status.progress .. " clusters at target)"
end

-- A Cluster whose automatic rollback ran stops there until a human acts.
local stalled = condition(status, "Stalled")
if is_true(stalled) or phase == "Stalled" or (not mesh and phase == "RolledBack") then
  hs.status = "Degraded"
  local reason = phase
  local detail = status.message
  if is_true(stalled) then
    reason = text(stalled.reason, phase)
    detail = text(stalled.message, status.message)
  end
  hs.message = reason .. ": " .. text(detail, "needs a human (see the Stalled condition)") .. progress
  return hs
end

-- A Mesh's failed clusters (Stalled or rolled back) keep their slots; the mesh goes on only
-- within its failure budget, so this is a failure a human must look at. A Cluster's Degraded
-- is a member problem, reported beside its health below.
local degraded = condition(status, "Degraded")
if mesh and (is_true(degraded) or phase == "Degraded") then
  hs.status = "Degraded"
  hs.message = text(status.message, degraded and degraded.message, "clusters failed") .. progress
  return hs
end

local awaiting = condition(status, "AwaitingApproval")
if is_true(awaiting) then
  hs.status = "Suspended"
  hs.message = "Awaiting approval: " .. text(awaiting.message, status.message, "approve the pending step") .. progress
  return hs
end

if is_true(condition(status, "Paused")) or phase == "Paused" then
  hs.status = "Suspended"
  if phase == "Ready" then
    if mesh then
      hs.message = "Paused with every cluster at its target"
    else
      hs.message = "Paused with every member at the target"
    end
  else
    -- The operator's own message may already say it ("paused", "paused: ...").
    local detail = text(status.message)
    if detail == "" or detail == "paused" then
      if mesh then
        detail = "paused: no cluster is admitted until spec.paused is false"
      else
        detail = "paused: no new step starts until spec.paused is false"
      end
    end
    if string.sub(detail, 1, 6) == "paused" then
      hs.message = "Paused" .. string.sub(detail, 7)
    else
      hs.message = "Paused: " .. detail
    end
    hs.message = hs.message .. progress
  end
  return hs
end

local ready = condition(status, "Ready")
if is_true(ready) then
  hs.status = "Healthy"
  hs.message = text(ready.message, "Ready")
  if is_true(degraded) then
    hs.message = hs.message .. " (degraded: " .. text(degraded.message, degraded.reason) .. ")"
  end
  return hs
end

hs.status = "Progressing"
local reconciling = condition(status, "Reconciling")
hs.message = phase .. ": " .. text(status.message, reconciling and reconciling.message, "reconciling") .. progress
return hs
