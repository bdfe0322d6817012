//! Layered configuration: compiled defaults → optional TOML file → `NOTIFY_`-prefixed
//! environment variables (`__` separates nesting levels, e.g. `NOTIFY_DATABASE__URL`).
//!
//! Each service owns one typed `Config` whose structs use `#[serde(default)]`, so a key that
//! no layer sets keeps its compiled default. A value of the wrong type stops the process with
//! a message that names the key and the layer it came from.

use std::path::Path;

use anyhow::Context;
use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::de::DeserializeOwned;

/// The prefix of every environment variable the services read.
pub const ENV_PREFIX: &str = "NOTIFY_";

/// Loads `T` from the optional file and the environment.
pub fn load<T: DeserializeOwned>(file: Option<&Path>) -> anyhow::Result<T> {
    let mut figment = Figment::new();
    if let Some(file) = file {
        anyhow::ensure!(
            file.exists(),
            "config file {} does not exist",
            file.display()
        );
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    figment
        .extract()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
        .context("loading configuration (file, then NOTIFY_* environment variables)")
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
    fn a_bad_value_names_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("NOTIFY_INNER__PORT", "not-a-port");
            let err = load::<Sample>(None).unwrap_err();
            assert!(format!("{err:#}").contains("port"), "{err:#}");
            Ok(())
        });
    }
}
