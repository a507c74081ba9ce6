//! The bearer token: where it comes from, and the constant-time check of a request's
//! `Authorization` header.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The environment variable a token is read from when no token file is given.
pub const TOKEN_ENV: &str = "GRAFT_TOKEN";

/// A bearer token, kept as its SHA-256 only: comparing digests of equal length in constant time
/// leaks neither the token's bytes nor its length through timing.
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A token from its text; refused if empty or if it has characters a header value
    /// cannot carry.
    pub fn new(text: &str) -> Result<Token, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the token is empty".to_owned());
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be printable ASCII without spaces".to_owned());
        }
        Ok(Token { digest: Sha256::digest(text.as_bytes()).into() })
    }

    /// The token of `file` if given, else of the environment variable [`TOKEN_ENV`], else
    /// none.
    pub fn load(file: Option<&Path>) -> Result<Option<Token>, String> {
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("reading the token file {}: {e}", file.display()))?;
            warn_if_readable_by_others(file);
            return Token::new(&text)
                .map(Some)
                .map_err(|e| format!("the token file {}: {e}", file.display()));
        }
        match std::env::var(TOKEN_ENV) {
            Ok(text) => Token::new(&text).map(Some).map_err(|e| format!("{TOKEN_ENV}: {e}")),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{TOKEN_ENV} is not UTF-8")),
        }
    }

    /// Whether an `Authorization` header value carries this token (`Bearer <token>`).
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else { return false };
        // The scheme's name is case-insensitive (RFC 7235); the token is not.
        let Some((scheme, presented)) = value.split_at_checked(7) else { return false };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return false;
        }
        let presented: [u8; 32] = Sha256::digest(presented.trim_ascii()).into();
        presented.ct_eq(&self.digest).into()
    }
}

fn warn_if_readable_by_others(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(file)
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(file = %file.display(), "the token file is readable by group or others: chmod 600 it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let token = Token::new("s3cret\n").unwrap();
        assert!(token.admits(Some(b"Bearer s3cret")));
        assert!(token.admits(Some(b"bearer s3cret")));
        assert!(!token.admits(Some(b"Bearer S3cret")));
        assert!(!token.admits(Some(b"Bearer s3cre")));
        assert!(!token.admits(Some(b"Bearer s3cret2")));
        assert!(!token.admits(Some(b"Basic s3cret")));
        assert!(!token.admits(Some(b"s3cret")));
        assert!(!token.admits(Some(b"")));
        assert!(!token.admits(None));
    }

    #[test]
    fn empty_or_unprintable_tokens_are_refused() {
        assert!(Token::new("  \n").is_err());
        assert!(Token::new("two words").is_err());
        assert!(Token::new("caf\u{e9}").is_err());
    }
}
