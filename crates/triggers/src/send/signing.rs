//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `{webhook-id}.{webhook-timestamp}.{body}`, one per configured secret.
//!
//! Following the published spec (rather than a scheme of our own) lets receivers verify
//! with an off-the-shelf library in their language. HMAC and SHA-256 come from the
//! RustCrypto crates and base64 from the `base64` crate: audited, widely used
//! implementations, because a hand-rolled MAC is where subtle bugs hide.

use crate::Secret;
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret; the rest is the key in base64.
pub const SECRET_PREFIX: &str = "whsec_";

/// Standard base64 that accepts the key with or without `=` padding, as the reference
/// libraries do.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a signing secret was refused. Never carries the secret or any part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigningSecretError {
    /// The secret does not start with `whsec_`.
    #[error("it does not start with `whsec_`")]
    MissingPrefix,
    /// What follows `whsec_` is not standard base64.
    #[error("what follows `whsec_` is not valid base64")]
    NotBase64,
    /// The key is empty.
    #[error("the key after `whsec_` is empty")]
    Empty,
}

/// A decoded signing key, ready to sign. `Debug` shows nothing of the key.
#[derive(Clone)]
pub struct SigningKey(Hmac<Sha256>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// Decodes a `whsec_<base64>` secret.
    pub fn parse(secret: &Secret) -> Result<Self, SigningSecretError> {
        let encoded = secret
            .expose()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SigningSecretError::MissingPrefix)?;
        let key = SECRET_BASE64
            .decode(encoded)
            .map_err(|_| SigningSecretError::NotBase64)?;
        if key.is_empty() {
            return Err(SigningSecretError::Empty);
        }
        // HMAC takes keys of any length, so this cannot fail; stay typed all the same.
        Hmac::<Sha256>::new_from_slice(&key)
            .map(Self)
            .map_err(|_| SigningSecretError::Empty)
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `v1,<base64>` signature of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            STANDARD.encode(self.mac(id, timestamp, body).finalize().into_bytes())
        )
    }

    /// Whether one `v1,<base64>` signature is this key's signature of the message,
    /// compared in constant time.
    fn verifies(&self, signature: &str, id: &str, timestamp: i64, body: &[u8]) -> bool {
        let Some(encoded) = signature.strip_prefix("v1,") else {
            return false;
        };
        let Ok(bytes) = STANDARD.decode(encoded) else {
            return false;
        };
        self.mac(id, timestamp, body).verify_slice(&bytes).is_ok()
    }
}

/// The value of `webhook-signature`: every key's signature, space-separated, in config
/// order. `None` without keys (the header is then not sent).
pub(crate) fn signature_header(
    keys: &[SigningKey],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Option<String> {
    (!keys.is_empty()).then(|| {
        keys.iter()
            .map(|key| key.sign(id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// What a receiver does: whether any signature of a `webhook-signature` header verifies
/// with `key`. Signatures of other versions are skipped, as the spec asks. Checking the
/// timestamp's age (against replays) is the receiver's business.
pub fn verify_signature(
    key: &SigningKey,
    header: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> bool {
    header
        .split(' ')
        .any(|signature| key.verifies(signature, id, timestamp, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1_614_265_330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn key(secret: &str) -> SigningKey {
        SigningKey::parse(&Secret::new(secret)).expect("valid secret")
    }

    #[test]
    fn the_spec_test_vector_signs_and_verifies() {
        let key = key(SPEC_SECRET);
        assert_eq!(
            key.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.as_bytes()),
            SPEC_SIGNATURE
        );
        assert!(verify_signature(
            &key,
            SPEC_SIGNATURE,
            SPEC_ID,
            SPEC_TIMESTAMP,
            SPEC_BODY.as_bytes()
        ));
        // One byte changed anywhere, and it does not verify.
        for (id, timestamp, body) in [
            ("msg_p5jXN8AQM9LWM0D4loKWxJeK", SPEC_TIMESTAMP, SPEC_BODY),
            (SPEC_ID, SPEC_TIMESTAMP + 1, SPEC_BODY),
            (SPEC_ID, SPEC_TIMESTAMP, r#"{"test": 2432232315}"#),
        ] {
            assert!(!verify_signature(
                &key,
                SPEC_SIGNATURE,
                id,
                timestamp,
                body.as_bytes()
            ));
        }
    }

    #[test]
    fn rotation_sends_one_signature_per_key_and_either_verifies() {
        let old = key(SPEC_SECRET);
        let new = key("whsec_bmV3IGtleSBmb3Igcm90YXRpb24=");
        let header = signature_header(
            &[old.clone(), new.clone()],
            SPEC_ID,
            SPEC_TIMESTAMP,
            SPEC_BODY.as_bytes(),
        )
        .expect("two keys");
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.starts_with(SPEC_SIGNATURE));
        for key in [&old, &new] {
            assert!(verify_signature(
                key,
                &header,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY.as_bytes()
            ));
        }
        let stranger = key("whsec_c3RyYW5nZXI=");
        assert!(!verify_signature(
            &stranger,
            &header,
            SPEC_ID,
            SPEC_TIMESTAMP,
            SPEC_BODY.as_bytes()
        ));
        assert_eq!(signature_header(&[], SPEC_ID, SPEC_TIMESTAMP, b"{}"), None);
    }

    #[test]
    fn unpadded_base64_is_accepted_like_the_reference_libraries() {
        let padded = key("whsec_bmV3IGtleSBmb3Igcm90YXRpb24=");
        let unpadded = key("whsec_bmV3IGtleSBmb3Igcm90YXRpb24");
        assert_eq!(padded.sign("a", 1, b"x"), unpadded.sign("a", 1, b"x"));
    }

    #[test]
    fn bad_secrets_are_typed_errors_that_do_not_echo_them() {
        for (secret, expect) in [
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                SigningSecretError::MissingPrefix,
            ),
            (
                "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                SigningSecretError::MissingPrefix,
            ),
            ("whsec_not base64!!", SigningSecretError::NotBase64),
            ("whsec_", SigningSecretError::Empty),
        ] {
            let err = SigningKey::parse(&Secret::new(secret)).expect_err(secret);
            assert_eq!(err, expect, "{secret}");
            assert!(!err.to_string().contains("MfKQ9r8"), "{err}");
        }
        assert_eq!(format!("{:?}", key(SPEC_SECRET)), "SigningKey(<redacted>)");
    }

    #[test]
    fn malformed_signature_headers_never_verify_nor_panic() {
        let key = key(SPEC_SECRET);
        for header in [
            "",
            " ",
            "v1,",
            "v1,!!!",
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ",,,",
            "v1,g0hM",
        ] {
            assert!(
                !verify_signature(&key, header, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.as_bytes()),
                "{header}"
            );
        }
    }
}
