//! Finding a model from what the user typed: a folder (safetensors first, then PyTorch's
//! `pytorch_model.bin` or its sharded index, as transformers picks them), a `.safetensors` file, a
//! `config.json`, a sharded index, or `ORG/NAME[@revision]` in a local Hugging Face cache.
//!
//! Resolution never touches the network. When nothing is found the error lists every path
//! that was tried.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where to look inside a model folder or cache entry.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// Revision for `ORG/NAME` specs (a branch, a tag or a commit hash); `main` by default.
    /// A `@rev` suffix in the spec takes precedence.
    pub revision: Option<String>,
    /// A folder inside the model repository (`text_encoder`, …).
    pub subfolder: Option<String>,
    /// A weights variant: `fp16` selects `model.fp16.safetensors` and
    /// `model.safetensors.index.fp16.json`.
    pub variant: Option<String>,
}

/// The files that describe one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFiles {
    /// One safetensors file, with the `config.json` beside it if any.
    Single {
        /// The weights.
        weights: PathBuf,
        /// The config, if present.
        config: Option<PathBuf>,
    },
    /// A sharded checkpoint's index, with the `config.json` beside it if any.
    Sharded {
        /// `model.safetensors.index.json`.
        index: PathBuf,
        /// The config, if present.
        config: Option<PathBuf>,
    },
    /// A config with no weights: the tensor list is expanded from it.
    ConfigOnly {
        /// The config.
        config: PathBuf,
    },
}

impl ModelFiles {
    /// The config file, if any.
    pub fn config(&self) -> Option<&Path> {
        match self {
            ModelFiles::Single { config, .. } | ModelFiles::Sharded { config, .. } => {
                config.as_deref()
            }
            ModelFiles::ConfigOnly { config } => Some(config),
        }
    }
}

/// Resolves `spec` (a path, or `ORG/NAME[@revision]`) to the files of one model.
pub fn resolve(spec: &str, opts: &SourceOptions) -> Result<ModelFiles> {
    let path = Path::new(spec);
    if path.exists() {
        return resolve_path(path, opts);
    }
    match parse_repo_spec(spec) {
        Some((repo, rev)) => {
            let rev = rev.or(opts.revision.as_deref()).unwrap_or("main");
            let (snapshot, tried) = find_snapshot(repo, rev);
            match snapshot {
                Some(dir) => resolve_path(&dir, opts),
                None => Err(Error::ModelNotFound {
                    spec: spec.into(),
                    repo: repo.into(),
                    tried,
                }),
            }
        }
        None => Err(Error::io(
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )),
    }
}

fn resolve_path(path: &Path, opts: &SourceOptions) -> Result<ModelFiles> {
    if path.is_dir() {
        let dir = match &opts.subfolder {
            Some(sub) => path.join(sub),
            None => path.to_path_buf(),
        };
        return resolve_dir(&dir, opts.variant.as_deref());
    }
    let sibling_config = || {
        let c = path.with_file_name("config.json");
        c.is_file().then_some(c)
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".json") {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        if text.contains("\"weight_map\"") {
            return Ok(ModelFiles::Sharded {
                index: path.into(),
                config: sibling_config(),
            });
        }
        return Ok(ModelFiles::ConfigOnly {
            config: path.into(),
        });
    }
    Ok(ModelFiles::Single {
        weights: path.into(),
        config: sibling_config(),
    })
}

fn resolve_dir(dir: &Path, variant: Option<&str>) -> Result<ModelFiles> {
    let (single, index) = match variant {
        Some(v) => (
            format!("model.{v}.safetensors"),
            format!("model.safetensors.index.{v}.json"),
        ),
        None => (
            "model.safetensors".to_string(),
            "model.safetensors.index.json".to_string(),
        ),
    };
    let config = dir.join("config.json");
    let config = config.is_file().then_some(config);
    let index = dir.join(index);
    if index.is_file() {
        return Ok(ModelFiles::Sharded { index, config });
    }
    let single = dir.join(single);
    if single.is_file() {
        return Ok(ModelFiles::Single {
            weights: single,
            config,
        });
    }
    let mut tried = vec![index, single];
    // PyTorch checkpoints when there is no safetensors one, as transformers does.
    let (torch_single, torch_index) = match variant {
        Some(v) => (
            format!("pytorch_model.{v}.bin"),
            format!("pytorch_model.bin.index.{v}.json"),
        ),
        None => (
            "pytorch_model.bin".to_string(),
            "pytorch_model.bin.index.json".to_string(),
        ),
    };
    let has_safetensors = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"));
    if !has_safetensors || variant.is_some() {
        let torch_index = dir.join(torch_index);
        if torch_index.is_file() {
            return Ok(ModelFiles::Sharded {
                index: torch_index,
                config,
            });
        }
        let torch_single = dir.join(torch_single);
        if torch_single.is_file() {
            return Ok(ModelFiles::Single {
                weights: torch_single,
                config,
            });
        }
        tried.push(torch_index);
        tried.push(torch_single);
    }
    if variant.is_none() {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        found.sort();
        match found.len() {
            0 => tried.push(dir.join("*.safetensors")),
            1 => {
                return Ok(ModelFiles::Single {
                    weights: found.remove(0),
                    config,
                });
            }
            _ => {
                return Err(Error::AmbiguousWeights {
                    path: dir.into(),
                    files: found,
                });
            }
        }
    }
    match config {
        Some(config) => Ok(ModelFiles::ConfigOnly { config }),
        None => {
            tried.push(dir.join("config.json"));
            Err(Error::NoWeights {
                path: dir.into(),
                tried,
            })
        }
    }
}

/// Splits `ORG/NAME@rev` into (`ORG/NAME`, `rev`). Bare `NAME` is accepted too (old
/// un-namespaced repositories such as `gpt2`), but nothing with more than one `/`.
fn parse_repo_spec(spec: &str) -> Option<(&str, Option<&str>)> {
    let (repo, rev) = match spec.split_once('@') {
        Some((r, v)) if !v.is_empty() => (r, Some(v)),
        Some(_) => return None,
        None => (spec, None),
    };
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    match repo.split_once('/') {
        Some((org, name)) if ok(org) && ok(name) => Some((repo, rev)),
        None if ok(repo) => Some((repo, rev)),
        _ => None,
    }
}

/// Hugging Face cache roots, in the order transformers consults them.
pub fn hub_cache_dirs() -> Vec<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("HF_HUB_CACHE") {
        return vec![dir];
    }
    if let Some(home) = var("HF_HOME") {
        return vec![home.join("hub")];
    }
    let mut dirs = Vec::new();
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        dirs.push(xdg.join("huggingface").join("hub"));
    }
    if let Some(home) = var("HOME") {
        let d = home.join(".cache").join("huggingface").join("hub");
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs
}

/// Finds the snapshot folder of `repo` at `rev` in the caches; returns the paths tried too.
fn find_snapshot(repo: &str, rev: &str) -> (Option<PathBuf>, Vec<PathBuf>) {
    let folder = format!("models--{}", repo.replace('/', "--"));
    let mut tried = Vec::new();
    for cache in hub_cache_dirs() {
        let base = cache.join(&folder);
        let reference = base.join("refs").join(rev);
        if let Ok(sha) = std::fs::read_to_string(&reference) {
            let snap = base.join("snapshots").join(sha.trim());
            if snap.is_dir() {
                return (Some(snap), tried);
            }
            tried.push(snap);
        } else {
            tried.push(reference);
        }
        let direct = base.join("snapshots").join(rev);
        if direct.is_dir() {
            return (Some(direct), tried);
        }
        tried.push(direct);
    }
    (None, tried)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_specs() {
        assert_eq!(
            parse_repo_spec("meta-llama/Llama-3.1-8B"),
            Some(("meta-llama/Llama-3.1-8B", None))
        );
        assert_eq!(parse_repo_spec("gpt2@v1.0"), Some(("gpt2", Some("v1.0"))));
        assert_eq!(parse_repo_spec("a/b/c"), None);
        assert_eq!(parse_repo_spec("./x"), None);
        assert_eq!(parse_repo_spec("org/name@"), None);
    }

    #[test]
    fn empty_dir_lists_what_was_tried() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(dir.path().to_str().unwrap(), &SourceOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::NoWeights { .. }), "{msg}");
        assert!(
            msg.contains("model.safetensors.index.json") && msg.contains("config.json"),
            "{msg}"
        );
    }

    #[test]
    fn variant_files_are_preferred() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"").unwrap();
        std::fs::write(dir.path().join("model.fp16.safetensors"), b"").unwrap();
        let opts = SourceOptions {
            variant: Some("fp16".into()),
            ..Default::default()
        };
        let files = resolve(dir.path().to_str().unwrap(), &opts).unwrap();
        assert_eq!(
            files,
            ModelFiles::Single {
                weights: dir.path().join("model.fp16.safetensors"),
                config: None
            }
        );
    }
}
