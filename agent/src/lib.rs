//! baton-agent: the process every member runs so that the Baton operator never logs into a
//! host. See `docs/agent-api.md` for the HTTP API.

pub mod api;
pub mod pki;
pub mod tls;
