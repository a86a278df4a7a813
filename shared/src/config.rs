//! Settings shared by the binaries. Every setting is a clap flag backed by an environment variable
//! (all listed in `.env.sample`); each binary flattens the groups it needs.

use std::{fmt, str::FromStr};

use clap::Args;

/// A secret setting (a signing key): never printed, in logs or `--help`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A connection URL whose password never reaches logs or `Debug` output.
#[derive(Clone)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for SecretUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretUrl(s.to_owned()))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url_password_span(&self.0) {
            Some((start, end)) => write!(f, "{}***{}", &self.0[..start], &self.0[end..]),
            None => f.write_str(&self.0),
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
