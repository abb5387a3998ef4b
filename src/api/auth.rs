//! The access rules of the client API, applied at the top of every RPC:
//! - a valid device token for this hub's realm (UNAUTHENTICATED / PERMISSION_DENIED with
//!   the reason), unless the node runs open (`--dev` or `--insecure-no-auth`); an expired
//!   token still works for the offline grace period if its device is known to the log;
//! - Append: every event is of the token's realm and written as the token's device (no
//!   impersonation), and kitchen/bar screens write only their own tickets;
//! - Cluster calls: role admin.
//!
//! A refused call is refused whole, before anything is proposed: nothing reaches the log.

use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::VerifyingKey;
use tonic::{Request, Status};

use crate::auth::token::{self, Claims, Role, TokenError};
use crate::domain::Realm;
use crate::proto::pb;
use crate::store::StateReader;

/// How a node checks callers.
#[derive(Clone)]
pub struct AccessPolicy {
    /// `None`: no tokens are checked (dev, or explicitly insecure).
    key: Option<VerifyingKey>,
    realm: Realm,
    /// The replicated state, asked whether a device is known (offline grace).
    reader: StateReader,
    /// How long after expiry a known device's token still works, in seconds.
    grace_s: u64,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl From<TokenError> for Status {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::WrongRealm { .. } => Status::permission_denied(err.to_string()),
            _ => Status::unauthenticated(err.to_string()),
        }
    }
}

impl AccessPolicy {
    pub fn new(key: Option<VerifyingKey>, realm: Realm, reader: StateReader, grace_s: u64) -> Self {
        Self {
            key,
            realm,
            reader,
            grace_s,
        }
    }

    /// Whether the device has an accepted event in the log (so it once held a valid token).
    fn known(&self, device: &str) -> bool {
        match self.reader.device(device) {
            Ok(found) => found.is_some(),
            Err(err) => {
                tracing::error!(%err, device, "cannot read the known devices; no grace given");
                false
            }
        }
    }

    pub fn is_open(&self) -> bool {
        self.key.is_none()
    }

    /// The caller's verified claims (`None` when the node runs open).
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Option<Claims>, Status> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        let header = match request.metadata().get("authorization") {
            None => return Err(TokenError::Missing.into()),
            Some(value) => value.to_str().map_err(|_| {
                TokenError::Malformed("the authorization header is not text".into())
            })?,
        };
        let Some(bearer) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
        else {
            return Err(TokenError::Malformed(
                "the authorization header is not `Bearer <token>`".into(),
            )
            .into());
        };
        let claims =
            token::verify_with_grace(bearer.trim(), key, now_s(), self.grace_s, |d| self.known(d))?;
        token::check_realm(&claims, &self.realm)?;
        Ok(Some(claims))
    }

    /// Cluster administration needs role admin.
    pub fn admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match self.caller(request)? {
            Some(claims) if claims.role != Role::Admin => Err(Status::permission_denied(format!(
                "role {} may not administer the group; role admin may",
                claims.role.as_str()
            ))),
            _ => Ok(()),
        }
    }

    /// Every event must be the caller's to write.
    pub fn check_events(
        &self,
        claims: Option<&Claims>,
        events: &[pb::Event],
    ) -> Result<(), Status> {
        let Some(claims) = claims else { return Ok(()) };
        for (i, event) in events.iter().enumerate() {
            let which = format!("event {i} ({})", event.event_id);
            if event.tenant_id != claims.tenant_id || event.store_id != claims.store_id {
                return Err(Status::permission_denied(format!(
                    "{which} is for realm {}/{}; the token is for {}",
                    event.tenant_id,
                    event.store_id,
                    claims.realm()
                )));
            }
            let device = event.actor.as_ref().map_or("", |a| a.device_id.as_str());
            if device != claims.sub {
                return Err(Status::permission_denied(format!(
                    "{which} is written as device {device:?}, but the token is for device {:?}",
                    claims.sub
                )));
            }
            let allowed = match claims.role {
                Role::Kds => event.aggregate_type == "kds",
                Role::Bds => event.aggregate_type == "bds",
                Role::Till | Role::Manager | Role::Admin => true,
            };
            if !allowed {
                return Err(Status::permission_denied(format!(
                    "role {} may only write {} ticket events; {which} is {}",
                    claims.role.as_str(),
                    claims.role.as_str(),
                    event.r#type
                )));
            }
        }
        Ok(())
    }
}
