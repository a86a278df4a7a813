//! Signing a delivery as the Standard Webhooks specification says (standardwebhooks.com), so
//! receivers can verify it with any of that project's libraries: `webhook-signature: v1,<base64 of
//! HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}">`. A secret written `whsec_<base64>`
//! is used as the bytes it encodes, any other as its UTF-8 bytes.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The signing key's bytes.
pub fn key_bytes(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The `webhook-signature` header's value.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&key_bytes(secret)).expect("HMAC takes a key of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// A new secret for `genqctl keys webhook-secret`: 32 random bytes, `whsec_`-encoded.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_example() {
        // The specification's own example (standard-webhooks/spec.md, "Signature scheme").
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;

        let signed = signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);

        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_plain_secret_is_used_as_its_bytes() {
        assert_eq!(key_bytes("not-base64"), b"not-base64");
        assert_eq!(key_bytes("whsec_AAEC"), vec![0, 1, 2]);
    }
}
