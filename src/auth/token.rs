//! Device tokens: compact JWTs signed with the store's Ed25519 key (`alg: EdDSA`).
//!
//! Verification is offline and strict, and each way a token can be wrong has its own
//! error, so a cashier's screen (or a log) says exactly why a device was refused. Only
//! `EdDSA` is accepted: `alg: none` and HMAC tokens (the classic "public key as HMAC
//! secret" confusion) are refused by the header alone, before any signature math.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::domain::Realm;

/// The audience every pos-hub token names.
pub const AUDIENCE: &str = "pos-hub";
/// Largest token accepted, in bytes; a real one is a few hundred.
pub const TOKEN_BYTES_MAX: usize = 4096;
/// Clock difference forgiven on `nbf`, `iat` and `exp`, in seconds: a token minted by a
/// laptop whose clock runs a little ahead of the hub's works at once, and one a few
/// seconds past its expiry still finishes the call it was sent with.
pub const LEEWAY_S: u64 = 60;
/// The longest lifetime (`exp − iat`) a hub accepts, in seconds (30 days). A token is the
/// whole credential of a device: a longer one is refused, however it was signed.
pub const LIFETIME_MAX_S: u64 = 30 * 86_400;
/// The lifetime `pos-hub token issue` gives when asked for none.
pub const LIFETIME_DEFAULT: &str = "7d";
/// Public keys a hub accepts at once: the current one and the next (or previous) one
/// while a rotation rolls out.
pub const KEYS_MAX: usize = 2;

/// What a device may do. Tills and managers write orders; kitchen and bar screens write
/// only their tickets; admins also change the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Till,
    Kds,
    Bds,
    Manager,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Till => "till",
            Role::Kds => "kds",
            Role::Bds => "bds",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Till, Role::Kds, Role::Bds, Role::Manager, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// The claims of a device token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: String,
    /// The deviceId.
    pub sub: String,
    #[serde(rename = "tenantId")]
    pub tenant_id: String,
    #[serde(rename = "storeId")]
    pub store_id: String,
    pub role: Role,
    /// Seconds since the Unix epoch.
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
}

impl Claims {
    pub fn realm(&self) -> Realm {
        Realm::new(self.tenant_id.clone(), self.store_id.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token: send `authorization: Bearer <token>`")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm {0:?} is not accepted; only EdDSA (Ed25519) tokens are")]
    Algorithm(String),
    #[error("bad token signature: not signed by this store's key")]
    BadSignature,
    #[error(
        "token key id (kid) {kid:?} is not one of this hub's keys ({}): sign it with a \
         configured key, or configure its public key with --public-key",
        .known.join(", ")
    )]
    UnknownKey { kid: String, known: Vec<String> },
    #[error("token audience is {0:?}, not \"pos-hub\"")]
    WrongAudience(String),
    #[error("token is for realm {token}, this hub serves {hub}")]
    WrongRealm { token: Realm, hub: Realm },
    #[error(
        "token is not valid yet: nbf {nbf} is after now ({now}) by more than the {LEEWAY_S} s leeway"
    )]
    NotYetValid { nbf: u64, now: u64 },
    #[error(
        "token was issued in the future: iat {iat} is after now ({now}) by more than the \
         {LEEWAY_S} s leeway; check the issuer's clock"
    )]
    IssuedInFuture { iat: u64, now: u64 },
    #[error("token expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
    #[error(
        "token expired at {exp} (now {now}); this hub is online (it reaches {probe}), so \
         expired tokens get no offline grace: issue the device a new token"
    )]
    ExpiredOnline { exp: u64, now: u64, probe: String },
    #[error(
        "token lifetime (exp − iat) is {lifetime_s} s; this hub accepts at most \
         {LIFETIME_MAX_S} s (30 days): issue a shorter one"
    )]
    TooLong { lifetime_s: u64 },
    #[error(
        "device {device:?} was revoked at {} (seq {seq}); its tokens issued before then are \
         refused, offline grace included: issue it a new token",
        rfc3339_s(*.revoked_at_s)
    )]
    Revoked {
        device: String,
        revoked_at_s: u64,
        seq: u64,
    },
    #[error("cannot read the deny-list of revoked devices ({0}); refused to be safe")]
    DenyListUnreadable(String),
}

/// Seconds since the Unix epoch as RFC 3339 in UTC, for messages.
fn rfc3339_s(s: u64) -> String {
    i64::try_from(s)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(|| format!("{s} s"), |t| t.to_rfc3339())
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    /// Which store key signed the token (`kid_of`); absent in tokens minted before keys
    /// had ids, which are then checked against every configured key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

/// A public key's id, as tokens name it in their header (`kid`): the first 9 bytes of the
/// key itself, base64url (12 characters). The key is public, so its prefix is too; two
/// random Ed25519 keys share it with odds of 2^-72.
pub fn kid_of(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(&key.as_bytes()[..9])
}

/// The public keys a hub verifies tokens with: one, or two while a rotation rolls out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<(String, VerifyingKey)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    #[error("no public key given")]
    Empty,
    #[error("{0} public keys given; a hub accepts at most {KEYS_MAX} at once (current and next)")]
    TooMany(usize),
    #[error("the same public key (kid {0}) is given twice")]
    Duplicate(String),
}

impl KeySet {
    /// The keys, in the order given; at least one, at most `KEYS_MAX`, all different.
    pub fn new(keys: Vec<VerifyingKey>) -> Result<KeySet, KeySetError> {
        if keys.is_empty() {
            return Err(KeySetError::Empty);
        }
        if keys.len() > KEYS_MAX {
            return Err(KeySetError::TooMany(keys.len()));
        }
        let mut set: Vec<(String, VerifyingKey)> = Vec::with_capacity(keys.len());
        for key in keys {
            let kid = kid_of(&key);
            if set.iter().any(|(k, _)| *k == kid) {
                return Err(KeySetError::Duplicate(kid));
            }
            set.push((kid, key));
        }
        Ok(KeySet { keys: set })
    }

    pub fn one(key: VerifyingKey) -> KeySet {
        KeySet {
            keys: vec![(kid_of(&key), key)],
        }
    }

    /// The ids of the keys, in order.
    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().map(|(kid, _)| kid.clone()).collect()
    }
}

fn b64_json<T: Serialize>(value: &T) -> String {
    // Serializing our own plain structs to JSON cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// Signs `claims` into a compact JWT whose header names the key (`kid`).
pub fn issue(key: &SigningKey, claims: &Claims) -> String {
    let header = Header {
        alg: "EdDSA".into(),
        typ: Some("JWT".into()),
        kid: Some(kid_of(&key.verifying_key())),
    };
    let signing_input = format!("{}.{}", b64_json(&header), b64_json(claims));
    let signature = key.sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

fn part<T: serde::de::DeserializeOwned>(encoded: &str, what: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|e| TokenError::Malformed(format!("{what} is not base64url: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| TokenError::Malformed(format!("{what}: {e}")))
}

/// What `token inspect` shows of a token without checking it.
pub struct Unverified {
    pub alg: String,
    pub kid: Option<String>,
    pub claims: Claims,
}

/// Splits a token and reads its header and claims without checking anything.
pub fn decode_unverified(token: &str) -> Result<Unverified, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "a JWT has three dot-separated parts".into(),
        ));
    };
    let header: Header = part(header, "header")?;
    Ok(Unverified {
        alg: header.alg,
        kid: header.kid,
        claims: part(claims, "claims")?,
    })
}

/// Where a device stands with the log, for the checks only the hub can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// No accepted event of it in the log: no offline grace.
    Unknown,
    /// It has an accepted event: its expired token gets the offline grace.
    Known,
    /// An admin revoked it at hub time `at_s` (seconds), in the event at `seq`.
    Revoked { at_s: u64, seq: u64 },
}

/// Verifies a token's form, algorithm, key, signature, audience, lifetime and validity
/// window at `now` (seconds since the Unix epoch), without grace. The realm is the
/// caller's check (`check_realm`).
pub fn verify(token: &str, key: &VerifyingKey, now: u64) -> Result<Claims, TokenError> {
    verify_with_grace(token, &KeySet::one(*key), now, 0, |_| Ok(Standing::Unknown))
}

/// `verify` against a hub's keys, with what the log says of the device (`standing`):
/// - a revoked device's tokens issued before its revocation (plus the leeway, to cover
///   the issuer's clock) are refused, whatever their expiry: revocation beats the grace;
/// - an expired token is still accepted for `grace_s` seconds after its expiry when its
///   device is known (spec §6.6: a store without WAN cannot refresh tokens); unknown
///   devices get no grace.
pub fn verify_with_grace(
    token: &str,
    keys: &KeySet,
    now: u64,
    grace_s: u64,
    standing: impl Fn(&str) -> Result<Standing, TokenError>,
) -> Result<Claims, TokenError> {
    let claims = signed_claims(token, keys)?;
    if claims.aud != AUDIENCE {
        return Err(TokenError::WrongAudience(claims.aud));
    }
    let lifetime_s = claims.exp.saturating_sub(claims.iat);
    if lifetime_s > LIFETIME_MAX_S {
        return Err(TokenError::TooLong { lifetime_s });
    }
    if claims.iat > now.saturating_add(LEEWAY_S) {
        return Err(TokenError::IssuedInFuture {
            iat: claims.iat,
            now,
        });
    }
    if claims.nbf > now.saturating_add(LEEWAY_S) {
        return Err(TokenError::NotYetValid {
            nbf: claims.nbf,
            now,
        });
    }
    let standing = standing(&claims.sub)?;
    if let Standing::Revoked { at_s, seq } = standing
        && claims.iat <= at_s.saturating_add(LEEWAY_S)
    {
        return Err(TokenError::Revoked {
            device: claims.sub,
            revoked_at_s: at_s,
            seq,
        });
    }
    let expires = claims.exp.saturating_add(LEEWAY_S);
    if now >= expires {
        let within_grace = now < expires.saturating_add(grace_s);
        if !(within_grace && standing != Standing::Unknown) {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now,
            });
        }
    }
    Ok(claims)
}

/// The claims of a well-formed EdDSA token whose signature checks out with one of `keys`:
/// the one its `kid` names, or, for a token without one, any.
fn signed_claims(token: &str, keys: &KeySet) -> Result<Claims, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > TOKEN_BYTES_MAX {
        return Err(TokenError::Malformed(format!(
            "{} bytes; at most {TOKEN_BYTES_MAX}",
            token.len()
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(TokenError::Malformed(
            "a JWT has three dot-separated parts".into(),
        ));
    };
    let header: Header = part(header, "header")?;
    if header.alg != "EdDSA" {
        return Err(TokenError::Algorithm(header.alg));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| TokenError::Malformed(format!("signature is not base64url: {e}")))?;
    let signature = Signature::from_slice(&signature).map_err(|_| {
        TokenError::Malformed(format!(
            "an Ed25519 signature has 64 bytes, not {}",
            signature.len()
        ))
    })?;
    let signing_input = &token[..token.len() - parts[2].len() - 1];
    let candidates: Vec<&VerifyingKey> = match &header.kid {
        Some(kid) => match keys.keys.iter().find(|(k, _)| k == kid) {
            Some((_, key)) => vec![key],
            None => {
                return Err(TokenError::UnknownKey {
                    kid: kid.chars().take(32).collect(),
                    known: keys.kids(),
                });
            }
        },
        None => keys.keys.iter().map(|(_, key)| key).collect(),
    };
    if !candidates
        .iter()
        .any(|key| key.verify(signing_input.as_bytes(), &signature).is_ok())
    {
        return Err(TokenError::BadSignature);
    }
    part(claims, "claims")
}

/// The token's realm must be this hub's.
pub fn check_realm(claims: &Claims, hub: &Realm) -> Result<(), TokenError> {
    let token = claims.realm();
    if &token != hub {
        return Err(TokenError::WrongRealm {
            token,
            hub: hub.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn claims() -> Claims {
        Claims {
            aud: AUDIENCE.into(),
            sub: "till-1".into(),
            tenant_id: "t-demo".into(),
            store_id: "s-001".into(),
            role: Role::Till,
            exp: 2_000,
            nbf: 1_000,
            iat: 1_000,
        }
    }

    #[test]
    fn an_issued_token_verifies_and_each_defect_has_its_own_error() {
        let key = key();
        let public = key.verifying_key();
        let token = issue(&key, &claims());
        assert_eq!(verify(&token, &public, 1_500), Ok(claims()));

        assert_eq!(verify("", &public, 1_500), Err(TokenError::Missing));
        assert!(matches!(
            verify("a.b", &public, 1_500),
            Err(TokenError::Malformed(_))
        ));
        assert_eq!(
            verify(&token, &public, 1_000 - LEEWAY_S - 1),
            Err(TokenError::IssuedInFuture {
                iat: 1_000,
                now: 1_000 - LEEWAY_S - 1
            })
        );
        let later_nbf = Claims {
            nbf: 1_200,
            ..claims()
        };
        assert_eq!(
            verify(&issue(&key, &later_nbf), &public, 1_100),
            Err(TokenError::NotYetValid {
                nbf: 1_200,
                now: 1_100
            })
        );
        assert_eq!(
            verify(&token, &public, 2_000 + LEEWAY_S),
            Err(TokenError::Expired {
                exp: 2_000,
                now: 2_000 + LEEWAY_S
            })
        );
        let other = SigningKey::from_bytes(&[9u8; 32]);
        let without_kid = |key: &SigningKey, claims: &Claims| {
            let input = format!(
                "{}.{}",
                b64_json(&Header {
                    alg: "EdDSA".into(),
                    typ: None,
                    kid: None
                }),
                b64_json(claims)
            );
            let signature = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).to_bytes());
            format!("{input}.{signature}")
        };
        assert_eq!(
            verify(&without_kid(&other, &claims()), &public, 1_500),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&issue(&other, &claims()), &public, 1_500),
            Err(TokenError::UnknownKey {
                kid: kid_of(&other.verifying_key()),
                known: vec![kid_of(&public)]
            })
        );
        let wrong_aud = Claims {
            aud: "other".into(),
            ..claims()
        };
        assert_eq!(
            verify(&issue(&key, &wrong_aud), &public, 1_500),
            Err(TokenError::WrongAudience("other".into()))
        );
        let too_long = Claims {
            exp: 1_000 + LIFETIME_MAX_S + 1,
            ..claims()
        };
        assert_eq!(
            verify(&issue(&key, &too_long), &public, 1_500),
            Err(TokenError::TooLong {
                lifetime_s: LIFETIME_MAX_S + 1
            })
        );
        let longest = Claims {
            exp: 1_000 + LIFETIME_MAX_S,
            ..claims()
        };
        assert!(verify(&issue(&key, &longest), &public, 1_500).is_ok());

        // The claims changed after signing.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = b64_json(&Claims {
            role: Role::Admin,
            ..claims()
        });
        assert_eq!(
            verify(&parts.join("."), &public, 1_500),
            Err(TokenError::BadSignature)
        );

        // alg: none with an empty signature.
        let none = format!(
            "{}.{}.",
            b64_json(&Header {
                alg: "none".into(),
                typ: None,
                kid: None
            }),
            b64_json(&claims())
        );
        assert_eq!(
            verify(&none, &public, 1_500),
            Err(TokenError::Algorithm("none".into()))
        );
    }

    #[test]
    fn the_leeway_forgives_a_minute_of_clock_difference_on_every_bound() {
        let key = key();
        let public = key.verifying_key();
        // Minted by a clock 5 s ahead of the hub: iat and nbf are in the hub's future.
        let early = Claims {
            iat: 1_005,
            nbf: 1_005,
            ..claims()
        };
        assert_eq!(verify(&issue(&key, &early), &public, 1_000), Ok(early));
        let token = issue(&key, &claims());
        assert!(verify(&token, &public, 1_000 - LEEWAY_S).is_ok());
        assert!(verify(&token, &public, 2_000 + LEEWAY_S - 1).is_ok());
    }

    #[test]
    fn a_token_without_kid_is_checked_against_every_configured_key() {
        let current = key();
        let next = SigningKey::from_bytes(&[9u8; 32]);
        let keys =
            KeySet::new(vec![current.verifying_key(), next.verifying_key()]).expect("two keys");
        let unknown = |_: &str| Ok(Standing::Unknown);
        for signer in [&current, &next] {
            let token = issue(signer, &claims());
            assert_eq!(
                verify_with_grace(&token, &keys, 1_500, 0, unknown),
                Ok(claims())
            );
            let mut parts: Vec<&str> = token.split('.').collect();
            let header = b64_json(&Header {
                alg: "EdDSA".into(),
                typ: None,
                kid: None,
            });
            parts[0] = &header;
            // Re-sign without kid.
            let input = format!("{}.{}", parts[0], parts[1]);
            let signature = URL_SAFE_NO_PAD.encode(signer.sign(input.as_bytes()).to_bytes());
            let old_style = format!("{input}.{signature}");
            assert_eq!(
                verify_with_grace(&old_style, &keys, 1_500, 0, unknown),
                Ok(claims())
            );
        }
    }

    #[test]
    fn key_sets_hold_one_or_two_different_keys() {
        let a = key().verifying_key();
        let b = SigningKey::from_bytes(&[9u8; 32]).verifying_key();
        let c = SigningKey::from_bytes(&[11u8; 32]).verifying_key();
        assert_eq!(KeySet::new(vec![]), Err(KeySetError::Empty));
        assert_eq!(KeySet::new(vec![a, b, c]), Err(KeySetError::TooMany(3)));
        assert_eq!(
            KeySet::new(vec![a, a]),
            Err(KeySetError::Duplicate(kid_of(&a)))
        );
        let set = KeySet::new(vec![a, b]).expect("two keys");
        assert_eq!(set.kids(), vec![kid_of(&a), kid_of(&b)]);
        assert_eq!(kid_of(&a).len(), 12);
        assert_ne!(kid_of(&a), kid_of(&b));
    }

    #[test]
    fn an_expired_token_gets_grace_only_for_a_known_device_and_only_for_the_grace() {
        let key = key();
        let token = issue(&key, &claims());
        let keys = KeySet::one(key.verifying_key());
        let known = |device: &str| {
            Ok(if device == "till-1" {
                Standing::Known
            } else {
                Standing::Unknown
            })
        };
        // Expired at 2_000, plus the leeway; grace 100 s.
        let end = 2_000 + LEEWAY_S;
        assert_eq!(
            verify_with_grace(&token, &keys, end + 50, 100, known),
            Ok(claims())
        );
        assert_eq!(
            verify_with_grace(&token, &keys, end + 100, 100, known),
            Err(TokenError::Expired {
                exp: 2_000,
                now: end + 100
            })
        );
        assert_eq!(
            verify_with_grace(&token, &keys, end + 50, 100, |_| Ok(Standing::Unknown)),
            Err(TokenError::Expired {
                exp: 2_000,
                now: end + 50
            }),
            "an unknown device gets no grace"
        );
        // Grace never forgives a bad signature.
        let forged = issue(&SigningKey::from_bytes(&[9u8; 32]), &claims());
        assert!(matches!(
            verify_with_grace(&forged, &keys, end + 50, 100, known),
            Err(TokenError::UnknownKey { .. })
        ));
    }

    #[test]
    fn a_revoked_device_is_refused_in_and_out_of_grace_until_it_gets_a_newer_token() {
        let key = key();
        let keys = KeySet::one(key.verifying_key());
        let revoked = |_: &str| {
            Ok(Standing::Revoked {
                at_s: 1_200,
                seq: 7,
            })
        };
        let refused = Err(TokenError::Revoked {
            device: "till-1".into(),
            revoked_at_s: 1_200,
            seq: 7,
        });
        let token = issue(&key, &claims());
        assert_eq!(
            verify_with_grace(&token, &keys, 1_500, 100, revoked),
            refused
        );
        // Within what would be its grace.
        assert_eq!(
            verify_with_grace(&token, &keys, 2_000 + LEEWAY_S + 50, 100, revoked),
            refused
        );
        // Issued within the leeway after the revocation: still refused.
        let just_after = Claims {
            iat: 1_200 + LEEWAY_S,
            nbf: 1_200 + LEEWAY_S,
            ..claims()
        };
        assert_eq!(
            verify_with_grace(&issue(&key, &just_after), &keys, 1_500, 0, revoked),
            refused
        );
        // A token issued after it is the device's new credential.
        let reissued = Claims {
            iat: 1_200 + LEEWAY_S + 1,
            nbf: 1_200 + LEEWAY_S + 1,
            ..claims()
        };
        assert_eq!(
            verify_with_grace(&issue(&key, &reissued), &keys, 1_500, 0, revoked),
            Ok(reissued)
        );
        // The deny-list cannot be read: refused, never waved through.
        let unreadable = |_: &str| Err(TokenError::DenyListUnreadable("disk".into()));
        assert_eq!(
            verify_with_grace(&token, &keys, 1_500, 0, unreadable),
            Err(TokenError::DenyListUnreadable("disk".into()))
        );
    }

    #[test]
    fn realms_must_match() {
        let hub = Realm::new("t-demo", "s-002");
        let err = check_realm(&claims(), &hub).expect_err("another store");
        assert_eq!(
            err.to_string(),
            "token is for realm t-demo/s-001, this hub serves t-demo/s-002"
        );
        assert!(check_realm(&claims(), &Realm::new("t-demo", "s-001")).is_ok());
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Role::Till, Role::Kds, Role::Bds, Role::Manager, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
