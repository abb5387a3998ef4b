//! Who may talk to a hub: device tokens (JWT, EdDSA/Ed25519) verified offline with the
//! store's public key, and the realm, identity and role rules every client RPC obeys.
//!
//! Nothing here does network I/O; `api/` calls it per request.

pub mod keys;
pub mod tls;
pub mod token;

pub use token::{Claims, Role, TokenError};
