//! Which model a job goes to: the model it names, the default one when it names none, or one arm
//! of an alias, chosen by a stable hash of who asks so a user stays on one arm.
//!
//! An alias's arms own consecutive ranges of [`BUCKETS`] buckets, in the order they were given
//! (90/10: buckets 0..9000 and 9000..10000). A user's bucket is fixed, so changing 90/10 to 80/20
//! moves exactly the users of buckets 8000..9000, all from the first arm to the second. With more
//! arms, weight moved between neighbours moves only users between them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Buckets users are spread over: weights are percentages, so each point is 100 buckets.
pub const BUCKETS: u64 = 10_000;

/// One arm of an alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Arm {
    pub model: String,
    /// Percent of users, 0 to 100; an alias's weights add up to 100.
    pub weight: u32,
}

/// A model of the catalogue, as routing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueModel {
    pub name: String,
    pub is_default: bool,
    pub fallback: Option<String>,
    pub fallback_after_secs: Option<i32>,
    pub intake_paused: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub name: String,
    pub arms: Vec<Arm>,
    pub fallback: Option<String>,
    pub fallback_after_secs: Option<i32>,
}

/// The models and aliases, read together from PostgreSQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    pub models: Vec<CatalogueModel>,
    pub aliases: Vec<Alias>,
}

/// Where a job goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// What the request named (a model or an alias); the default model's name when it named none.
    pub requested: String,
    /// The model whose queue the job waits in.
    pub model: String,
    pub fallback: Option<String>,
    pub fallback_after_secs: Option<i32>,
    /// The model's intake is paused (`genqctl queue pause --model`).
    pub paused: bool,
}

/// Why a request cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("the model '{asked}' does not exist; models: {}", known.join(", "))]
    Unknown { asked: String, known: Vec<String> },
    #[error(
        "no model is registered yet: start a worker, or register one with `genqctl models add`"
    )]
    NoModel,
    #[error(
        "no default model is set: name one with `genqctl models default NAME`, or send `model`"
    )]
    NoDefault,
}

impl Catalogue {
    pub fn model(&self, name: &str) -> Option<&CatalogueModel> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn alias(&self, name: &str) -> Option<&Alias> {
        self.aliases.iter().find(|a| a.name == name)
    }

    pub fn default_model(&self) -> Option<&CatalogueModel> {
        self.models.iter().find(|m| m.is_default)
    }

    /// Every name a request may give: models, then aliases.
    pub fn names(&self) -> Vec<String> {
        let models = self.models.iter().map(|m| m.name.clone());
        models
            .chain(self.aliases.iter().map(|a| a.name.clone()))
            .collect()
    }

    /// Routes a request naming `asked` (none: the default model) for `user`, the stable identity
    /// an alias keeps on one arm.
    pub fn route(&self, asked: Option<&str>, user: &str) -> Result<Route, RouteError> {
        let asked = match asked {
            Some(name) => name,
            None if self.models.is_empty() => return Err(RouteError::NoModel),
            None => &self.default_model().ok_or(RouteError::NoDefault)?.name,
        };
        if let Some(model) = self.model(asked) {
            return Ok(self.route_to(asked, model, None));
        }
        let unknown = || RouteError::Unknown {
            asked: asked.to_owned(),
            known: self.names(),
        };
        let alias = self.alias(asked).ok_or_else(unknown)?;
        let arm = choose_arm(&alias.name, &alias.arms, user).ok_or_else(unknown)?;
        let model = self.model(&arm.model).ok_or_else(unknown)?;
        Ok(self.route_to(asked, model, Some(alias)))
    }

    fn route_to(&self, asked: &str, model: &CatalogueModel, alias: Option<&Alias>) -> Route {
        // The model's own fallback first; else the alias's, unless it is the model itself.
        let alias_fallback = alias
            .filter(|a| a.fallback.as_deref().is_some_and(|f| f != model.name))
            .map(|a| (a.fallback.clone(), a.fallback_after_secs));
        let (fallback, fallback_after_secs) = match (&model.fallback, alias_fallback) {
            (Some(_), _) | (None, None) => (model.fallback.clone(), model.fallback_after_secs),
            (None, Some(alias)) => alias,
        };
        Route {
            requested: asked.to_owned(),
            model: model.name.clone(),
            fallback,
            fallback_after_secs,
            paused: model.intake_paused,
        }
    }
}

/// The bucket, of [`BUCKETS`], that `user` falls in for `alias`: SHA-256, so every replica and
/// every version of genq agrees.
pub fn bucket(alias: &str, user: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(alias.as_bytes())
        .chain_update([0])
        .chain_update(user.as_bytes())
        .finalize();
    let first = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    first % BUCKETS
}

/// The arm whose range holds the user's bucket; `None` for arms that weigh nothing.
pub fn choose_arm<'a>(alias: &str, arms: &'a [Arm], user: &str) -> Option<&'a Arm> {
    let bucket = bucket(alias, user);
    let mut end = 0;
    for arm in arms {
        end += u64::from(arm.weight) * (BUCKETS / 100);
        if bucket < end {
            return Some(arm);
        }
    }
    None
}

/// A model's version: the SHA-256 of its GGUF file, in hex (read in 1 MiB pieces; blocking).
pub fn file_version(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The short form of a version, as listings show it.
pub fn short_version(version: &str) -> &str {
    &version[..version.len().min(12)]
}

/// Why a set of arms is refused, naming the problem; `None` when they are valid.
pub fn check_arms(arms: &[Arm]) -> Option<String> {
    if arms.is_empty() {
        return Some("an alias needs at least one arm (--to MODEL=WEIGHT)".into());
    }
    if let Some(arm) = arms.iter().find(|a| a.weight > 100) {
        return Some(format!(
            "weight {} of {} is over 100",
            arm.weight, arm.model
        ));
    }
    let total: u32 = arms.iter().map(|a| a.weight).sum();
    if total != 100 {
        return Some(format!(
            "the weights add up to {total}; they must add up to 100"
        ));
    }
    let mut names: Vec<&str> = arms.iter().map(|a| a.model.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Some(format!("{} is named twice", pair[0]));
    }
    None
}

/// Why a model or alias name is refused, if it is.
pub fn check_name(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 128 {
        return Some(format!(
            "a name is 1 to 128 bytes; '{name}' is {}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Some("a name may not hold control characters".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arms(split: &[(&str, u32)]) -> Vec<Arm> {
        split
            .iter()
            .map(|&(model, weight)| Arm {
                model: model.into(),
                weight,
            })
            .collect()
    }

    #[test]
    fn moving_weight_between_two_arms_moves_only_users_of_the_arm_that_shrank() {
        let before = arms(&[("v1", 90), ("v2", 10)]);
        let after = arms(&[("v1", 80), ("v2", 20)]);
        let mut moved = 0;
        for user in 0..5000 {
            let user = format!("user-{user}");
            let was = &choose_arm("gpt2", &before, &user).unwrap().model;
            let is = &choose_arm("gpt2", &after, &user).unwrap().model;
            if was != is {
                assert_eq!((was.as_str(), is.as_str()), ("v1", "v2"));
                moved += 1;
            }
        }
        // About a tenth of the users move; none other.
        assert!((400..600).contains(&moved), "{moved} users moved");
    }

    #[test]
    fn a_zero_weight_arm_gets_nobody_and_the_buckets_are_even() {
        let split = arms(&[("a", 0), ("b", 50), ("c", 50)]);
        let mut counts = [0u32; 3];
        for user in 0..10_000 {
            let arm = choose_arm("x", &split, &user.to_string()).unwrap();
            counts[split.iter().position(|a| a == arm).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        assert!((4700..5300).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn bad_arms_are_named() {
        assert_eq!(
            check_arms(&arms(&[("a", 60), ("b", 30)])).as_deref(),
            Some("the weights add up to 90; they must add up to 100")
        );
        assert_eq!(
            check_arms(&arms(&[("a", 50), ("a", 50)])).as_deref(),
            Some("a is named twice")
        );
        assert_eq!(check_arms(&arms(&[("a", 100)])), None);
    }
}
