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
    #[error("token audience is {0:?}, not \"pos-hub\"")]
    WrongAudience(String),
    #[error("token is for realm {token}, this hub serves {hub}")]
    WrongRealm { token: Realm, hub: Realm },
    #[error("token is not valid yet: nbf {nbf} is after now ({now})")]
    NotYetValid { nbf: u64, now: u64 },
    #[error("token expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

fn b64_json<T: Serialize>(value: &T) -> String {
    // Serializing our own plain structs to JSON cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// Signs `claims` into a compact JWT.
pub fn issue(key: &SigningKey, claims: &Claims) -> String {
    let header = Header {
        alg: "EdDSA".into(),
        typ: Some("JWT".into()),
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

/// Splits a token and reads its claims without checking anything (for `token inspect`).
pub fn decode_unverified(token: &str) -> Result<(String, Claims), TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "a JWT has three dot-separated parts".into(),
        ));
    };
    let header: Header = part(header, "header")?;
    Ok((header.alg, part(claims, "claims")?))
}

/// Verifies a token's form, algorithm, signature, audience and validity window at `now`
/// (seconds since the Unix epoch). The realm is the caller's check (`check_realm`).
pub fn verify(token: &str, key: &VerifyingKey, now: u64) -> Result<Claims, TokenError> {
    verify_with_grace(token, key, now, 0, |_| false)
}

/// `verify`, except that an expired token is still accepted for `grace_s` seconds after
/// its expiry when `known(device)` says its device was seen before (spec §6.6: a store
/// without WAN cannot refresh tokens). Unknown devices get no grace.
pub fn verify_with_grace(
    token: &str,
    key: &VerifyingKey,
    now: u64,
    grace_s: u64,
    known: impl Fn(&str) -> bool,
) -> Result<Claims, TokenError> {
    let claims = signed_claims(token, key)?;
    if claims.aud != AUDIENCE {
        return Err(TokenError::WrongAudience(claims.aud));
    }
    if now < claims.nbf {
        return Err(TokenError::NotYetValid {
            nbf: claims.nbf,
            now,
        });
    }
    if now >= claims.exp {
        let within_grace = now < claims.exp.saturating_add(grace_s);
        if !(within_grace && known(&claims.sub)) {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now,
            });
        }
    }
    Ok(claims)
}

/// The claims of a well-formed EdDSA token whose signature checks out.
fn signed_claims(token: &str, key: &VerifyingKey) -> Result<Claims, TokenError> {
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
    key.verify(signing_input.as_bytes(), &signature)
        .map_err(|_| TokenError::BadSignature)?;
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
            verify(&token, &public, 999),
            Err(TokenError::NotYetValid {
                nbf: 1_000,
                now: 999
            })
        );
        assert_eq!(
            verify(&token, &public, 2_000),
            Err(TokenError::Expired {
                exp: 2_000,
                now: 2_000
            })
        );
        let other = SigningKey::from_bytes(&[9u8; 32]);
        assert_eq!(
            verify(&issue(&other, &claims()), &public, 1_500),
            Err(TokenError::BadSignature)
        );
        let wrong_aud = Claims {
            aud: "other".into(),
            ..claims()
        };
        assert_eq!(
            verify(&issue(&key, &wrong_aud), &public, 1_500),
            Err(TokenError::WrongAudience("other".into()))
        );

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
                typ: None
            }),
            b64_json(&claims())
        );
        assert_eq!(
            verify(&none, &public, 1_500),
            Err(TokenError::Algorithm("none".into()))
        );
    }

    #[test]
    fn an_expired_token_gets_grace_only_for_a_known_device_and_only_for_the_grace() {
        let key = key();
        let token = issue(&key, &claims());
        let public = key.verifying_key();
        let known = |device: &str| device == "till-1";
        // Expired at 2_000; grace 100 s.
        assert_eq!(
            verify_with_grace(&token, &public, 2_050, 100, known),
            Ok(claims())
        );
        assert_eq!(
            verify_with_grace(&token, &public, 2_100, 100, known),
            Err(TokenError::Expired {
                exp: 2_000,
                now: 2_100
            })
        );
        assert_eq!(
            verify_with_grace(&token, &public, 2_050, 100, |_| false),
            Err(TokenError::Expired {
                exp: 2_000,
                now: 2_050
            }),
            "an unknown device gets no grace"
        );
        // Grace never forgives a bad signature.
        let forged = issue(&SigningKey::from_bytes(&[9u8; 32]), &claims());
        assert_eq!(
            verify_with_grace(&forged, &public, 2_050, 100, known),
            Err(TokenError::BadSignature)
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
