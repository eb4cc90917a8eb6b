//! The object a planner decides for, as both planners read it: which object, which revision of
//! its spec, the spec and the status the last decision wrote.

/// One Cluster or Mesh object as a planner reads it, borrowed from wherever the host keeps it.
pub struct ObjectView<'a, Spec, Status> {
    /// `metadata.name`: named in messages, events, the log and operation ids.
    pub name: &'a str,
    /// `metadata.generation` of the spec, written back as `observedGeneration`.
    pub generation: Option<i64>,
    /// What the user asked for.
    pub spec: &'a Spec,
    /// The status the last decision wrote (None: never planned): what the planner cannot
    /// observe again (the steps or admissions in flight, the log).
    pub status: Option<&'a Status>,
}

// By hand: a derive would ask `Spec` and `Status` to be `Copy` too, though only borrowed.
impl<Spec, Status> Clone for ObjectView<'_, Spec, Status> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Spec, Status> Copy for ObjectView<'_, Spec, Status> {}
