//! The access rules of the client API, checked by an interceptor before any handler runs:
//! - a valid device token for this hub's realm (UNAUTHENTICATED / PERMISSION_DENIED with
//!   the reason), unless the node runs open (`--dev` or `--insecure-no-auth`), signed by
//!   one of the hub's keys (two during a rotation), checked against the hub's clock
//!   (`HubClock`: never behind the group's committed hub time); an expired token still
//!   works for the offline grace period if its device is known to the log; a device on
//!   the replicated deny-list (`cluster revoke-device`) is refused, grace or not;
//! - Cluster calls: role admin (`CallerCheck::admin`);
//! - Append (checked by its handler, on the decoded events): every event is of the token's
//!   realm and written as the token's device (no impersonation), and kitchen/bar screens
//!   write only their own tickets.
//!
//! The interceptor puts the verified `Caller` in the request's extensions, where handlers
//! read it (`caller`). A refused call is refused whole, before anything is proposed:
//! nothing reaches the log.

use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::error::ApiError;
use crate::auth::token::{self, Claims, KeySet, Role, Standing, TokenError};
use crate::domain::{Realm, Rules};
use crate::proto::pb;
use crate::store::StateReader;
use crate::wan::Wan;

/// How a node checks callers.
#[derive(Clone)]
pub struct AccessPolicy {
    /// `None`: no tokens are checked (dev, or explicitly insecure).
    keys: Option<KeySet>,
    realm: Realm,
    /// The replicated state, asked whether a device is revoked or known (offline grace),
    /// and the node's hub clock.
    reader: StateReader,
    /// How long after expiry a known device's token still works, in seconds, while the
    /// hub is offline.
    grace_s: u64,
    /// Whether the hub reaches its WAN: online, it gives no grace.
    wan: Wan,
}

impl AccessPolicy {
    pub fn new(
        keys: Option<KeySet>,
        realm: Realm,
        reader: StateReader,
        grace_s: u64,
        wan: Wan,
    ) -> Self {
        Self {
            keys,
            realm,
            reader,
            grace_s,
            wan,
        }
    }

    /// What this node's applied state says of the device: revoked (the deny-list), known
    /// (an accepted event in the log, so it once held a valid token), or unknown. A
    /// deny-list that cannot be read refuses the call; known devices that cannot be read
    /// only lose the grace.
    fn standing(&self, device: &str) -> Result<Standing, TokenError> {
        match self.reader.revocation(device) {
            Ok(Some(revoked)) => {
                return Ok(Standing::Revoked {
                    at_s: revoked.revoked_at_ms / 1_000,
                    seq: revoked.seq,
                });
            }
            Ok(None) => {}
            Err(err) => {
                tracing::error!(%err, device, "cannot read the deny-list; refusing the call");
                return Err(TokenError::DenyListUnreadable(err.to_string()));
            }
        }
        match self.reader.device(device) {
            Ok(Some(_)) => Ok(Standing::Known),
            Ok(None) => Ok(Standing::Unknown),
            Err(err) => {
                tracing::error!(%err, device, "cannot read the known devices; no grace given");
                Ok(Standing::Unknown)
            }
        }
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_none()
    }

    /// The verified claims of the token in `metadata` (`None` when the node runs open).
    fn verify(&self, metadata: &MetadataMap) -> Result<Option<Claims>, TokenError> {
        let Some(keys) = &self.keys else {
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
        let now = self.reader.clock().now_s();
        let online = self.wan.online();
        let grace_s = if online.is_some() { 0 } else { self.grace_s };
        let verified =
            token::verify_with_grace(bearer.trim(), keys, now, grace_s, |d| self.standing(d));
        let claims = match (verified, online) {
            (Err(TokenError::Expired { exp, now }), Some(probe)) if self.grace_s > 0 => {
                return Err(TokenError::ExpiredOnline {
                    exp,
                    now,
                    probe: probe.to_owned(),
                });
            }
            (verified, _) => verified?,
        };
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

/// Every event must be the caller's to write. Returns the events' encoded size in all
/// (the rate limit charges it), measured here once.
pub fn check_events(claims: Option<&Claims>, events: &[pb::Event]) -> Result<usize, ApiError> {
    // Size and the redaction mark first, with or without tokens: an oversize event never
    // reaches the log, nor one marked redacted (its payment was never checked; see
    // `view.rs`).
    let mut total = 0;
    for (i, event) in events.iter().enumerate() {
        if event.redacted {
            return Err(ApiError::RedactedAppend {
                which: which(i, event),
            });
        }
        let bytes = event.encoded_len();
        if Rules::CURRENT.check_event_bytes(bytes).is_err() {
            return Err(ApiError::EventTooLarge {
                which: which(i, event),
                bytes,
            });
        }
        total += bytes;
    }
    let Some(claims) = claims else {
        return Ok(total);
    };
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
    Ok(total)
}

/// The deny-list (aggregateType `device`) and the archive mark (aggregateType `store`) are
/// written by admins only: any other role's Append carrying such an event is refused
/// whole. Kept apart from `check_events` (the roles' rules for the store's own data).
pub fn check_admin_events(claims: Option<&Claims>, events: &[pb::Event]) -> Result<(), ApiError> {
    let Some(claims) = claims else { return Ok(()) };
    if claims.role == Role::Admin {
        return Ok(());
    }
    let admins_only = |e: &pb::Event| match e.aggregate_type.as_str() {
        DEVICE_AGGREGATE => Some("revokes devices (`pos-hub cluster revoke-device`)"),
        STORE_AGGREGATE => Some("marks the archive (`pos-hub cluster archive-mark`)"),
        _ => None,
    };
    match events
        .iter()
        .enumerate()
        .find_map(|(i, e)| admins_only(e).map(|what| (i, e, what)))
    {
        Some((i, event, what)) => Err(ApiError::AdminOnlyEvent {
            role: claims.role,
            which: format!("event {i} ({})", event.event_id),
            event_type: event.r#type.clone(),
            what,
        }),
        None => Ok(()),
    }
}

/// The aggregate type of the deny-list's events.
pub const DEVICE_AGGREGATE: &str = "device";
/// The aggregate type of the store's own records (the archive mark).
pub const STORE_AGGREGATE: &str = "store";

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
