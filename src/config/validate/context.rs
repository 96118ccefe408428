//! The shared state of one validation: the text (for line and column), the directory
//! relative paths resolve against, and the errors and warnings found so far, with the typed
//! readers every section uses.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};
use url::Url;

use super::{Diagnostic, is_loopback};
use crate::config::Position;
use crate::config::schema::Text;

/// Shared state of one validation: the text for positions, and what was found.
pub(super) struct Context<'a> {
    pub(super) file: &'a Path,
    pub(super) dir: PathBuf,
    pub(super) line_starts: Vec<usize>,
    pub(super) text: &'a str,
    pub(super) errors: Vec<Diagnostic>,
    pub(super) warnings: Vec<Diagnostic>,
}

impl<'a> Context<'a> {
    pub(super) fn new(text: &'a str, file: &'a Path) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Context {
            file,
            dir,
            line_starts,
            text,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Line and column of a byte offset.
    pub(super) fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line.saturating_sub(1)];
        let col = self
            .text
            .get(start..offset)
            .map_or(1, |s| s.chars().count() + 1);
        Position { line, col }
    }

    pub(super) fn diagnostic(&self, span: Range<usize>, key: &str, message: String) -> Diagnostic {
        Diagnostic {
            file: self.file.to_path_buf(),
            position: self.position(span.start),
            key: key.to_owned(),
            message,
        }
    }

    pub(super) fn error_at(&mut self, span: Range<usize>, key: &str, message: String) {
        let d = self.diagnostic(span, key, message);
        self.errors.push(d);
    }

    pub(super) fn error<T>(&mut self, at: &Spanned<T>, key: &str, message: impl Into<String>) {
        self.error_at(at.span(), key, message.into());
    }

    pub(super) fn warn<T>(&mut self, at: &Spanned<T>, key: &str, message: impl Into<String>) {
        let d = self.diagnostic(at.span(), key, message.into());
        self.warnings.push(d);
    }

    /// Deserializes one section, recording its error.
    pub(super) fn section<T: DeserializeOwned>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error_at(
                    e.span().unwrap_or(value.span()),
                    key,
                    e.message().to_owned(),
                );
                None
            }
        }
    }

    /// Deserializes each element of an array of tables on its own.
    pub(super) fn array_of<T: DeserializeOwned>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        key: &str,
    ) -> Vec<(T, Range<usize>)> {
        let DeValue::Array(items) = value.get_ref() else {
            self.error_at(
                value.span(),
                key,
                format!("expected an array of tables: write [[{key}]]"),
            );
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let v = self.section::<T>(item, &format!("{key}[{i}]"))?;
                Some((v, item.span()))
            })
            .collect()
    }

    /// A path from the file, relative to the file's directory.
    pub(super) fn path(&self, text: &Text) -> PathBuf {
        let p = Path::new(text.get_ref());
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    pub(super) fn duration(
        &mut self,
        text: Option<&Text>,
        key: &str,
        default: Duration,
    ) -> Duration {
        match text {
            None => default,
            Some(t) => crate::config::duration::parse(t.get_ref()).unwrap_or_else(|e| {
                self.error(t, key, e);
                default
            }),
        }
    }

    pub(super) fn listen(&mut self, text: &Text, key: &str) -> Option<SocketAddr> {
        match text.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let msg = format!(
                    "invalid listen address {:?}: expected IP:PORT, such as \"0.0.0.0:8080\"",
                    text.get_ref()
                );
                self.error(text, key, msg);
                None
            }
        }
    }

    /// A count within `min..=max`.
    pub(super) fn count(
        &mut self,
        value: Option<&Spanned<i64>>,
        key: &str,
        min: i64,
        max: i64,
        default: usize,
    ) -> usize {
        match value {
            None => default,
            Some(v) if (min..=max).contains(v.get_ref()) => {
                usize::try_from(*v.get_ref()).unwrap_or(default)
            }
            Some(v) => {
                self.error(v, key, format!("must be between {min} and {max}"));
                default
            }
        }
    }

    /// A URL that fetches keys or carries tokens: https, or http on a loopback host.
    pub(super) fn secure_url(&mut self, text: &Text, key: &str) -> Option<Url> {
        let url = self.url(text, key)?;
        if url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url)) {
            Some(url)
        } else {
            self.error(
                text,
                key,
                "must be https (plain http only for loopback hosts: 127.0.0.0/8, ::1, localhost)",
            );
            None
        }
    }

    /// An http or https URL.
    pub(super) fn url(&mut self, text: &Text, key: &str) -> Option<Url> {
        match Url::parse(text.get_ref()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            Ok(_) => {
                self.error(text, key, "expected an http or https URL");
                None
            }
            Err(e) => {
                self.error(text, key, format!("invalid URL: {e}"));
                None
            }
        }
    }

    /// Checks names are unique within a kind (issuers, routes, targets).
    pub(super) fn unique<'n>(
        &mut self,
        names: impl IntoIterator<Item = (&'n Text, String)>,
        what: &str,
    ) {
        let mut seen = HashSet::new();
        for (name, key) in names {
            if name.get_ref().is_empty() {
                self.error(name, &key, format!("{what} name must not be empty"));
            } else if !seen.insert(name.get_ref().as_str()) {
                self.error(
                    name,
                    &key,
                    format!("duplicate {what} name {:?}", name.get_ref()),
                );
            }
        }
    }
}
