//! `ATELIER_DATABASE_URL`: which backend, and where. Its `Debug` and `Display`
//! never show a password.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `duckdb://PATH`: an embedded file; `duckdb://:memory:` for a throw-away database.
    DuckDb(PathBuf),
    /// `postgres://…` or `postgresql://…`, kept verbatim for the driver.
    Postgres(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error("database URL has no scheme; expected duckdb://PATH or postgres://…")]
    MissingScheme,
    #[error("unsupported database scheme {0:?}; expected duckdb:// or postgres://")]
    UnsupportedScheme(String),
    #[error("duckdb:// URL needs a file path, e.g. duckdb://./data/atelier.duckdb")]
    EmptyPath,
}

impl FromStr for DatabaseUrl {
    type Err = DatabaseUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s.split_once("://").ok_or(DatabaseUrlError::MissingScheme)?;
        match scheme {
            "duckdb" if rest.is_empty() => Err(DatabaseUrlError::EmptyPath),
            "duckdb" => Ok(DatabaseUrl::DuckDb(PathBuf::from(rest))),
            "postgres" | "postgresql" => Ok(DatabaseUrl::Postgres(s.to_owned())),
            other => Err(DatabaseUrlError::UnsupportedScheme(other.to_owned())),
        }
    }
}

impl DatabaseUrl {
    pub fn scheme(&self) -> &'static str {
        match self {
            DatabaseUrl::DuckDb(_) => "duckdb",
            DatabaseUrl::Postgres(_) => "postgres",
        }
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{masked}@{host}{}", redact_query_password(tail))
        }
        None => format!("{scheme}://{authority}{}", redact_query_password(tail)),
    }
}

/// libpq also accepts `?password=…`.
fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::DuckDb(path) => write!(f, "duckdb://{}", path.display()),
            DatabaseUrl::Postgres(url) => f.write_str(&redact_userinfo(url)),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes() {
        assert_eq!(
            "duckdb://./data/a.duckdb".parse::<DatabaseUrl>(),
            Ok(DatabaseUrl::DuckDb(PathBuf::from("./data/a.duckdb")))
        );
        assert_eq!(
            "postgresql://h/db".parse::<DatabaseUrl>().map(|u| u.scheme()),
            Ok("postgres")
        );
        assert_eq!(
            "mysql://h".parse::<DatabaseUrl>(),
            Err(DatabaseUrlError::UnsupportedScheme("mysql".into()))
        );
        assert_eq!(
            "duckdb://".parse::<DatabaseUrl>(),
            Err(DatabaseUrlError::EmptyPath)
        );
        assert_eq!(
            "data.db".parse::<DatabaseUrl>(),
            Err(DatabaseUrlError::MissingScheme)
        );
    }

    #[test]
    fn never_shows_a_password() {
        let url: DatabaseUrl = "postgres://app:s3cret@db:5432/atelier?sslmode=require&password=x2"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{url} {url:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("x2"), "{shown}");
        assert!(shown.contains("postgres://app:***@db:5432/atelier?sslmode=require&password=***"));
    }
}
