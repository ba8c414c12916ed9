//! Who may call a sidecar.
//!
//! The sidecar's API can commit checkpoints, skip deliveries and send webhooks, so any
//! process that reaches it controls the shard. By default it listens on a Unix socket
//! created with mode 0600 (only its user, and root, may connect). On TCP, which every
//! local process can reach, every call must carry `authorization: Bearer <token>`; the
//! token comes from a file or the environment ([`TOKEN_ENV`]), never from a flag value,
//! which any user can read in the process list.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::{Request, Status};
use triggers::Secret;

/// The environment variable a bearer token may come from.
pub const TOKEN_ENV: &str = "TRIGGERS_SIDECAR_TOKEN";
/// Shortest bearer token accepted, in bytes: a guessable token protects nothing.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Longest bearer token accepted, in bytes (also bounds how much of a token file is read).
pub const MAX_TOKEN_BYTES: usize = 1024;

/// A shared secret that callers of a sidecar present as `authorization: Bearer <token>`.
/// `Debug` prints `<redacted>`.
#[derive(Debug, Clone)]
pub struct BearerToken(Secret);

/// Why a bearer token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("reading the sidecar token file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token is too short or too long.
    #[error(
        "the sidecar token from {from} is {len} bytes; it must be {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES}"
    )]
    Length {
        /// Where it came from (a file path or the variable's name).
        from: String,
        /// Its length (of what was read, for a file longer than the limit).
        len: usize,
    },
    /// The token has a character a header value cannot carry.
    #[error("the sidecar token from {from} must be printable ASCII without spaces")]
    Charset {
        /// Where it came from.
        from: String,
    },
}

impl BearerToken {
    /// A token from its text, checked: [`MIN_TOKEN_BYTES`] to [`MAX_TOKEN_BYTES`] of
    /// printable ASCII without spaces. `from` names where it came from, for errors.
    pub fn new(token: impl Into<String>, from: &str) -> Result<Self, TokenError> {
        let token = token.into();
        if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&token.len()) {
            return Err(TokenError::Length {
                from: from.to_string(),
                len: token.len(),
            });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Charset {
                from: from.to_string(),
            });
        }
        Ok(Self(Secret::new(token)))
    }

    /// The token in a file (surrounding whitespace, as a trailing newline, is ignored).
    /// At most [`MAX_TOKEN_BYTES`] (plus a little whitespace) are read.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let read = |source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(read)?
            .take(MAX_TOKEN_BYTES as u64 + 64)
            .read_to_string(&mut text)
            .map_err(read)?;
        Self::new(text.trim(), &path.display().to_string())
    }

    /// The token in [`TOKEN_ENV`], if it is set.
    pub fn from_env() -> Result<Option<Self>, TokenError> {
        match std::env::var(TOKEN_ENV) {
            Ok(token) => Self::new(token.trim(), TOKEN_ENV).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(TokenError::Charset {
                from: TOKEN_ENV.to_string(),
            }),
        }
    }

    /// From `--token-file` if given, else [`TOKEN_ENV`] if set: how every binary finds it.
    pub fn from_file_or_env(file: Option<&Path>) -> Result<Option<Self>, TokenError> {
        match file {
            Some(path) => Self::from_file(path).map(Some),
            None => Self::from_env(),
        }
    }

    /// The `authorization` value to send, marked sensitive so no log shows it.
    fn header_value(&self) -> AsciiMetadataValue {
        let mut value = MetadataValue::try_from(format!("Bearer {}", self.0.expose()))
            .expect("checked: printable ASCII");
        value.set_sensitive(true);
        value
    }

    /// Whether an `authorization` value carries this token, compared in time that does
    /// not depend on where they differ.
    pub(crate) fn accepts(&self, value: &[u8]) -> bool {
        let Some(given) = value.strip_prefix(b"Bearer ") else {
            return false;
        };
        self.is(given)
    }

    /// Whether `given` is the token itself (the console's login form), compared in time
    /// that does not depend on where they differ.
    pub(crate) fn is(&self, given: &[u8]) -> bool {
        constant_time_eq(given, self.0.expose().as_bytes())
    }
}

/// Whether two secrets are equal, in time that depends on their lengths only, never on
/// where they differ (bearer tokens, the console's CSRF tokens).
pub(crate) fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The server's check: every call carries the token, when there is one.
#[derive(Debug, Clone)]
pub(crate) struct RequireToken(pub(crate) Option<BearerToken>);

impl tonic::service::Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else {
            return Ok(request);
        };
        match request.metadata().get("authorization") {
            Some(value) if token.accepts(value.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated(
                "the bearer token is not this sidecar's",
            )),
            None => Err(Status::unauthenticated(
                "this sidecar needs `authorization: Bearer <token>` on every call",
            )),
        }
    }
}

/// The client's side: adds the token to every call, when there is one.
#[derive(Debug, Clone, Default)]
pub struct SendToken(Option<AsciiMetadataValue>);

impl SendToken {
    /// Sends `token` (or nothing) with every call.
    pub fn new(token: Option<&BearerToken>) -> Self {
        Self(token.map(BearerToken::header_value))
    }
}

impl tonic::service::Interceptor for SendToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor as _;

    #[test]
    fn tokens_are_bounded_and_compared_whole() {
        assert!(matches!(
            BearerToken::new("short", "test"),
            Err(TokenError::Length { len: 5, .. })
        ));
        assert!(matches!(
            BearerToken::new("x".repeat(MAX_TOKEN_BYTES + 1), "test"),
            Err(TokenError::Length { .. })
        ));
        assert!(matches!(
            BearerToken::new("with a space in it!", "test"),
            Err(TokenError::Charset { .. })
        ));
        let token = BearerToken::new("s3cret-token-0123456789", "test").expect("valid");
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
        assert!(token.accepts(b"Bearer s3cret-token-0123456789"));
        assert!(!token.accepts(b"Bearer s3cret-token-012345678"));
        assert!(!token.accepts(b"Bearer s3cret-token-01234567890"));
        assert!(!token.accepts(b"s3cret-token-0123456789"));

        let mut require = RequireToken(Some(token.clone()));
        let mut send = SendToken::new(Some(&token));
        let sent = send.call(Request::new(())).expect("adds");
        assert!(require.call(sent).is_ok());
        let refused = require.call(Request::new(())).expect_err("no token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }
}
