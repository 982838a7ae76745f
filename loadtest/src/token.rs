//! User tokens, minted the way Herald's clients get them: HS256 over `{<claim>: user, iat, exp}`.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{Map, Value};

pub struct Minter {
    key: EncodingKey,
    header: Header,
    claim: String,
    ttl_secs: u64,
}

impl Minter {
    /// `claim` is the user claim Herald is configured with (`sub`, or `user_id` for Django SimpleJWT).
    pub fn new(secret: &str, claim: &str, ttl_secs: u64) -> Self {
        Minter {
            key: EncodingKey::from_secret(secret.as_bytes()),
            header: Header::default(), // HS256
            claim: claim.to_owned(),
            ttl_secs,
        }
    }

    pub fn mint(&self, user: &str) -> String {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_secs();
        let mut claims = Map::new();
        claims.insert(self.claim.clone(), Value::from(user));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now + self.ttl_secs));
        encode(&self.header, &claims, &self.key).expect("HS256 signing cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};

    #[test]
    fn tokens_verify_with_the_same_secret_and_carry_the_user_claim() {
        let m = Minter::new("herald-dev-secret-change-me", "sub", 600);
        let t = m.mint("lt-42");
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = true;
        let data =
            decode::<Map<String, Value>>(&t, &DecodingKey::from_secret(b"herald-dev-secret-change-me"), &v).unwrap();
        assert_eq!(data.claims["sub"], "lt-42");
        let exp = data.claims["exp"].as_u64().unwrap();
        let iat = data.claims["iat"].as_u64().unwrap();
        assert_eq!(exp - iat, 600);
    }

    #[test]
    fn another_secret_does_not_verify_and_the_claim_name_is_configurable() {
        let m = Minter::new("s1", "user_id", 60);
        let t = m.mint("7");
        let v = Validation::new(Algorithm::HS256);
        assert!(decode::<Map<String, Value>>(&t, &DecodingKey::from_secret(b"s2"), &v).is_err());
        let ok = decode::<Map<String, Value>>(&t, &DecodingKey::from_secret(b"s1"), &v).unwrap();
        assert_eq!(ok.claims["user_id"], "7");
        assert!(!ok.claims.contains_key("sub"));
    }
}
