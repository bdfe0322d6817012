//! Layered configuration: compiled defaults → optional TOML file → `NOTIFY_`-prefixed
//! environment variables (`__` separates nesting levels, e.g. `NOTIFY_DATABASE__URL`).
//!
//! Each service owns one typed `Config` whose structs use `#[serde(default)]`, so a key that
//! no layer sets keeps its compiled default. A value of the wrong type stops the process with
//! a message that names the key and the layer it came from.
//!
//! A key the service does not have is never silently ignored: inside one of its sections
//! (`NOTIFY_DATABASE__URLL`, `[rate_limits.user] request = 1`) it stops the process naming
//! the key; a whole top-level key it does not have (`NOTIFY_KAFKA__…` given to the bff, which
//! has no Kafka client — one environment shared by several services) is logged as ignored.
//! [`load_strict`] refuses both (the compose file's test holds every service to it).

use std::path::Path;

use anyhow::Context;
use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

/// The prefix of every environment variable the services read.
pub const ENV_PREFIX: &str = "NOTIFY_";

/// `NOTIFY_` variables that are not configuration keys: the config file's path, the log
/// format, and the test harness's own (`NOTIFY_TEST_…`).
fn is_config_variable(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    key != "CONFIG" && key != "LOG_FORMAT" && !key.starts_with("TEST_")
}

/// Loads `T` from the optional file and the environment; a key inside one of `T`'s sections
/// that `T` does not have is an error, a top-level key it does not have a warning.
pub fn load<T: DeserializeOwned>(file: Option<&Path>) -> anyhow::Result<T> {
    let (config, unknown) = extract::<T>(file, None)?;
    for key in unknown {
        if key.path.contains('.') {
            anyhow::bail!("invalid configuration: {key}: this service has no such setting");
        }
        tracing::warn!(key = %key, "configuration key ignored: not a setting of this service");
    }
    Ok(config)
}

/// [`load`] that refuses every key `T` does not have, top-level ones included.
pub fn load_strict<T: DeserializeOwned>(file: Option<&Path>) -> anyhow::Result<T> {
    strict(extract::<T>(file, None)?)
}

/// [`load_strict`] from `vars` (`NOTIFY_…` name, value) instead of the process's environment:
/// what a service would make of an environment it is to be given (a compose file's).
pub fn load_strict_from<T: DeserializeOwned>(
    file: Option<&Path>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<T> {
    strict(extract::<T>(file, Some(vars.into_iter().collect()))?)
}

fn strict<T>((config, unknown): (T, Vec<UnknownKey>)) -> anyhow::Result<T> {
    if !unknown.is_empty() {
        let keys: Vec<String> = unknown.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "invalid configuration: not settings of this service: {}",
            keys.join(", ")
        );
    }
    Ok(config)
}

/// A key some layer set that the config type does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// Dotted (`database.urll`).
    pub path: String,
    /// Where it came from: the environment variable or the file.
    pub source: String,
}

impl std::fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` ({})", self.path, self.source)
    }
}

/// `vars`: the environment to read instead of the process's.
fn extract<T: DeserializeOwned>(
    file: Option<&Path>,
    vars: Option<Vec<(String, String)>>,
) -> anyhow::Result<(T, Vec<UnknownKey>)> {
    let mut figment = Figment::new();
    if let Some(file) = file {
        anyhow::ensure!(
            file.exists(),
            "config file {} does not exist",
            file.display()
        );
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = match vars {
        None => figment.merge(
            Env::prefixed(ENV_PREFIX)
                .split("__")
                .filter(|k| is_config_variable(k.as_str())),
        ),
        Some(vars) => figment.merge(Vars(vars)),
    };
    let Tracked { value, ignored } = figment
        .extract::<Tracked<T>>()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
        .context("loading configuration (file, then NOTIFY_* environment variables)")?;
    let unknown = ignored
        .into_iter()
        .map(|path| {
            let from_env = figment
                .find_metadata(&path)
                .is_some_and(|m| m.name.contains("environment"));
            let source = if from_env {
                format!(
                    "{ENV_PREFIX}{}",
                    path.replace('.', "__").to_ascii_uppercase()
                )
            } else {
                file.map_or_else(|| "the config file".to_owned(), |f| f.display().to_string())
            };
            UnknownKey { path, source }
        })
        .collect();
    Ok((value, unknown))
}

/// Given variables read as [`Env`] reads the process's: `NOTIFY_A__B=v` → `a.b = v`, the
/// value parsed the same way.
struct Vars(Vec<(String, String)>);

impl figment::Provider for Vars {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("`NOTIFY_` environment variable(s)")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (name, value) in &self.0 {
            let Some(key) = name
                .get(..ENV_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .map(|_| &name[ENV_PREFIX.len()..])
            else {
                continue;
            };
            if !is_config_variable(key) {
                continue;
            }
            let key = key.to_ascii_lowercase().replace("__", ".");
            let value: figment::value::Value = value.parse().expect("infallible");
            if let figment::value::Value::Dict(_, nested) = figment::util::nest(&key, value) {
                merge(&mut dict, nested);
            }
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

/// `from`'s keys into `into`, tables merged key by key, the later value winning otherwise.
fn merge(into: &mut figment::value::Dict, from: figment::value::Dict) {
    use figment::value::Value;
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, nested)) => merge(existing, nested),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// `T`, and the path of every key the input had that `T` did not take.
struct Tracked<T> {
    value: T,
    ignored: Vec<String>,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Tracked<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut ignored = Vec::new();
        // serde_ignored writes an `Option`'s inside as `?`: `push.fcm.?.base_url`.
        let value = serde_ignored::deserialize(d, |path| {
            ignored.push(path.to_string().replace(".?", ""));
        })?;
        Ok(Self { value, ignored })
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, Default)]
    #[serde(default)]
    struct Inner {
        port: u16,
        name: String,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(default)]
    struct Sample {
        inner: Inner,
        flag: bool,
    }

    #[test]
    fn env_overrides_file_and_defaults_fill_the_rest() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "flag = true\n[inner]\nport = 1\nname = \"file\"")?;
            jail.set_env("NOTIFY_INNER__PORT", "8080");
            let cfg: Sample = load(Some(Path::new("c.toml"))).unwrap();
            assert_eq!(cfg.inner.port, 8080);
            assert_eq!(cfg.inner.name, "file");
            assert!(cfg.flag);
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_in_a_section_is_refused_and_an_unknown_section_only_by_load_strict() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("NOTIFY_INNER__PROT", "8080");
            let err = load::<Sample>(None).unwrap_err();
            assert!(format!("{err:#}").contains("NOTIFY_INNER__PROT"), "{err:#}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[inner]\nname = \"x\"\nnmae = \"y\"")?;
            let err = load::<Sample>(Some(Path::new("c.toml"))).unwrap_err();
            assert!(format!("{err:#}").contains("inner.nmae"), "{err:#}");
            assert!(format!("{err:#}").contains("c.toml"), "{err:#}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            // Another service's section, and the variables that are not settings.
            jail.set_env("NOTIFY_KAFKA__BOOTSTRAP_SERVERS", "k:9092");
            jail.set_env("NOTIFY_LOG_FORMAT", "pretty");
            jail.set_env("NOTIFY_CONFIG", "/etc/notify.toml");
            jail.set_env("NOTIFY_TEST_PG", "postgres://x");
            jail.set_env("NOTIFY_INNER__PORT", "1");
            let cfg: Sample = load(None).unwrap();
            assert_eq!(cfg.inner.port, 1);
            let err = load_strict::<Sample>(None).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("NOTIFY_KAFKA"), "{msg}");
            assert!(
                !msg.contains("LOG_FORMAT") && !msg.contains("TEST_PG"),
                "{msg}"
            );
            Ok(())
        });
    }

    #[test]
    fn load_strict_from_reads_given_variables_as_the_environment_would() {
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let cfg: Sample = load_strict_from(
            None,
            vars(&[("NOTIFY_INNER__PORT", "8080"), ("NOTIFY_FLAG", "true")]),
        )
        .unwrap();
        assert_eq!(cfg.inner.port, 8080);
        assert!(cfg.flag);
        let err =
            load_strict_from::<Sample>(None, vars(&[("NOTIFY_INNER__PROT", "1")])).unwrap_err();
        assert!(format!("{err:#}").contains("NOTIFY_INNER__PROT"), "{err:#}");
        let err =
            load_strict_from::<Sample>(None, vars(&[("NOTIFY_INNER__PORT", "x")])).unwrap_err();
        assert!(format!("{err:#}").contains("port"), "{err:#}");
    }

    #[test]
    fn a_bad_value_names_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("NOTIFY_INNER__PORT", "not-a-port");
            let err = load::<Sample>(None).unwrap_err();
            assert!(format!("{err:#}").contains("port"), "{err:#}");
            Ok(())
        });
    }
}
