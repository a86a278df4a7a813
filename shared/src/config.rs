//! Settings shared by the binaries. Every setting is a clap flag backed by an environment variable
//! (all listed in `.env.sample`); each binary flattens the groups it needs.

use std::{fmt, str::FromStr};

use clap::Args;
use secrecy::{ExposeSecret, SecretString};

/// A secret setting (a signing key): never printed, in logs, `Debug` output or `--help`
/// (`hide_env_values`), and zeroed when dropped. Clap parses it with this.
pub fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

/// A connection URL whose password never reaches logs or `Debug` output; only the password is
/// hidden, so a log still says where genq connects.
#[derive(Clone)]
pub struct SecretUrl(SecretString);

impl SecretUrl {
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl FromStr for SecretUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretUrl(SecretString::from(s)))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.expose();
        match url_password_span(url) {
            Some((start, end)) => write!(f, "{}***{}", &url[..start], &url[end..]),
            None => f.write_str(url),
        }
    }
}

/// Byte range of the password in `scheme://user:password@host...`, if there is one.
fn url_password_span(url: &str) -> Option<(usize, usize)> {
    let authority_start = url.find("://")? + 3;
    let at = authority_start + url[authority_start..].find('@')?;
    let colon = authority_start + url[authority_start..at].find(':')?;
    Some((colon + 1, at))
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL. The API, the workers and `genqctl migrate` create the database if it does
    /// not exist; other genqctl commands require it migrated.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/genq"
    )]
    pub database_url: SecretUrl,
}

#[derive(Debug, Clone, Args)]
pub struct QueueConfig {
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: SecretUrl,
    /// Queue namespace in Redis: API and workers must agree on it.
    #[arg(long = "queue", env = "GENQ_QUEUE", default_value = "genq")]
    pub queue: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_urls_hide_only_the_password() {
        let url: SecretUrl = "postgres://genq:s3cret@db:5432/genq".parse().unwrap();
        assert_eq!(format!("{url:?}"), "postgres://genq:***@db:5432/genq");
        let url: SecretUrl = "redis://127.0.0.1:6379".parse().unwrap();
        assert_eq!(url.to_string(), "redis://127.0.0.1:6379");
    }
}
