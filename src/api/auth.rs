//! The access rules of the client API, checked by an interceptor before any handler runs:
//! - a valid device token for this hub's realm (UNAUTHENTICATED / PERMISSION_DENIED with
//!   the reason), unless the node runs open (`--dev` or `--insecure-no-auth`); an expired
//!   token still works for the offline grace period if its device is known to the log;
//! - Cluster calls: role admin (`CallerCheck::admin`);
//! - Append (checked by its handler, on the decoded events): every event is of the token's
//!   realm and written as the token's device (no impersonation), and kitchen/bar screens
//!   write only their own tickets.
//!
//! The interceptor puts the verified `Caller` in the request's extensions, where handlers
//! read it (`caller`). A refused call is refused whole, before anything is proposed:
//! nothing reaches the log.

use ed25519_dalek::VerifyingKey;
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::error::ApiError;
use crate::auth::token::{self, Claims, Role, TokenError};
use crate::clock::now_s;
use crate::domain::{Realm, Rules};
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

    /// The verified claims of the token in `metadata` (`None` when the node runs open).
    fn verify(&self, metadata: &MetadataMap) -> Result<Option<Claims>, TokenError> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        let header = match metadata.get("authorization") {
            None => return Err(TokenError::Missing),
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
            ));
        };
        let claims =
            token::verify_with_grace(bearer.trim(), key, now_s(), self.grace_s, |d| self.known(d))?;
        token::check_realm(&claims, &self.realm)?;
        Ok(Some(claims))
    }

    /// The interceptor that checks every call of a device service.
    pub fn devices(&self) -> CallerCheck {
        CallerCheck {
            policy: self.clone(),
            admin_only: false,
        }
    }

    /// The interceptor that checks every call of the cluster service: role admin.
    pub fn admin(&self) -> CallerCheck {
        CallerCheck {
            policy: self.clone(),
            admin_only: true,
        }
    }
}

/// Who made a call: the token's verified claims, or `None` on an open node. Put in the
/// request's extensions by `CallerCheck`.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Claims>);

/// A tonic interceptor: verifies the caller before the call reaches its handler.
#[derive(Clone)]
pub struct CallerCheck {
    policy: AccessPolicy,
    admin_only: bool,
}

impl CallerCheck {
    fn check(&self, metadata: &MetadataMap) -> Result<Caller, ApiError> {
        let claims = self.policy.verify(metadata)?;
        if self.admin_only
            && let Some(claims) = &claims
            && claims.role != Role::Admin
        {
            return Err(ApiError::NotAdmin { role: claims.role });
        }
        Ok(Caller(claims))
    }
}

impl Interceptor for CallerCheck {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.check(request.metadata())?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller `CallerCheck` verified. A request it did not see is refused: a service wired
/// without the check must fail closed, not open.
pub fn caller<T>(request: &Request<T>) -> Result<Option<&Claims>, ApiError> {
    match request.extensions().get::<Caller>() {
        Some(Caller(claims)) => Ok(claims.as_ref()),
        None => Err(ApiError::Unchecked),
    }
}

/// Every event must be the caller's to write.
pub fn check_events(claims: Option<&Claims>, events: &[pb::Event]) -> Result<(), ApiError> {
    // Size first, with or without tokens: an oversize event never reaches the log.
    for (i, event) in events.iter().enumerate() {
        let bytes = event.encoded_len();
        if Rules::CURRENT.check_event_bytes(bytes).is_err() {
            return Err(ApiError::EventTooLarge {
                which: which(i, event),
                bytes,
            });
        }
    }
    let Some(claims) = claims else { return Ok(()) };
    for (i, event) in events.iter().enumerate() {
        let which = which(i, event);
        if event.tenant_id != claims.tenant_id || event.store_id != claims.store_id {
            return Err(ApiError::ForeignRealm {
                which,
                event_realm: format!("{}/{}", event.tenant_id, event.store_id),
                token_realm: claims.realm().to_string(),
            });
        }
        let device = event.actor.as_ref().map_or("", |a| a.device_id.as_str());
        if device != claims.sub {
            return Err(ApiError::Impersonation {
                which,
                device: device.to_owned(),
                token_device: claims.sub.clone(),
            });
        }
        let clock_device = event.clock.as_ref().map_or("", |c| c.device_id.as_str());
        if clock_device != claims.sub {
            return Err(ApiError::ClockImpersonation {
                which,
                clock_device: clock_device.to_owned(),
                token_device: claims.sub.clone(),
            });
        }
        let allowed = match claims.role {
            Role::Kds => event.aggregate_type == "kds",
            Role::Bds => event.aggregate_type == "bds",
            Role::Till | Role::Manager | Role::Admin => true,
        };
        if !allowed {
            return Err(ApiError::RoleMayNotWrite {
                role: claims.role,
                which,
                event_type: event.r#type.clone(),
            });
        }
        let manager = matches!(claims.role, Role::Manager | Role::Admin);
        if !manager && let Some(what) = manager_only(event) {
            return Err(ApiError::ManagerOnly {
                role: claims.role,
                which,
                what,
            });
        }
    }
    Ok(())
}

/// What in `event` only a manager (or admin) may do, if anything: overriding another
/// device's lock or a newer version (`force`, the spec's manager override), and changing
/// stock counts (`inventory.adjusted`, which moves what the shop believes it owns).
/// Cancelling (voiding) an order stays with tills: it is the routine end of an unsent
/// order, and the log keeps which device did it.
fn manager_only(event: &pb::Event) -> Option<&'static str> {
    if event.force {
        Some("force an event over a lock or a newer version")
    } else if event.aggregate_type == "inventory" {
        Some("adjust inventory")
    } else {
        None
    }
}

fn which(i: usize, event: &pb::Event) -> String {
    format!("event {i} ({})", event.event_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_the_check_did_not_see_is_refused_not_let_through() {
        let unchecked = Request::new(());
        assert!(matches!(caller(&unchecked), Err(ApiError::Unchecked)));
        assert_eq!(
            Status::from(ApiError::Unchecked).code(),
            tonic::Code::Internal
        );
        let mut open = Request::new(());
        open.extensions_mut().insert(Caller(None));
        assert!(matches!(caller(&open), Ok(None)));
    }
}
