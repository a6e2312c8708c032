//! Model routing: aliases, strategies with two levels of fallback, and which models
//! each role may use (the seed's strategy-based model router, ADR-0014).
//!
//! A request names a model or an alias. An alias resolves to a strategy: an ordered
//! chain of models for one action, and optionally a fallback strategy. A transient
//! upstream failure (timeout, unreachable, 408, 429, 5xx, no endpoints) moves on to
//! the next model; when the chain is exhausted the fallback strategy's chain is
//! tried; a permanent failure (400, 401, 402, 403, 413, 422) stops at once. A plain
//! model is a chain of one.

use std::collections::HashMap;
use std::future::Future;

use atelier_openrouter::UpstreamError;
use atelier_store::Role;
use serde::{Deserialize, Serialize};

use super::generation_error::GenerationError;

/// What a request does; a strategy serves one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Chat,
    Text,
    Image,
    Video,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Chat => "chat",
            Action::Text => "text",
            Action::Image => "image",
            Action::Video => "video",
        }
    }

    /// Chat and text strategies serve both: they call the same endpoint.
    fn accepts(self, strategy: Action) -> bool {
        self == strategy
            || matches!(
                (self, strategy),
                (Action::Chat, Action::Text) | (Action::Text, Action::Chat)
            )
    }
}

/// The `[routing]` configuration (or `models.toml`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSettings {
    /// Named strategies.
    pub strategies: HashMap<String, Strategy>,
    /// Model names users may ask for, each resolving to a strategy.
    pub aliases: HashMap<String, String>,
    /// Per role, the models (and aliases) it may use; `*` ends a prefix pattern.
    /// A role not listed may use any.
    pub roles: HashMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    pub action: Action,
    /// Tried in this order.
    pub models: Vec<String>,
    /// Tried when every model of this chain failed transiently.
    #[serde(default)]
    pub fallback: Option<String>,
}

/// The models to try, chain after chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub chains: Vec<Vec<String>>,
}

impl Plan {
    /// The model tried first.
    pub fn first(&self) -> &str {
        self.chains
            .first()
            .and_then(|c| c.first())
            .map_or("", String::as_str)
    }
}

pub struct ModelRouter {
    settings: RoutingSettings,
}

impl ModelRouter {
    /// Checks the settings: every alias and fallback names a strategy, chains are not
    /// empty, roles are known.
    pub fn new(settings: RoutingSettings) -> Result<Self, String> {
        for (name, strategy) in &settings.strategies {
            if strategy.models.is_empty() {
                return Err(format!("routing strategy {name:?} has no models"));
            }
            if let Some(fallback) = &strategy.fallback
                && !settings.strategies.contains_key(fallback)
            {
                return Err(format!(
                    "routing strategy {name:?} falls back to unknown strategy {fallback:?}"
                ));
            }
        }
        for (alias, strategy) in &settings.aliases {
            if !settings.strategies.contains_key(strategy) {
                return Err(format!(
                    "routing alias {alias:?} names unknown strategy {strategy:?}"
                ));
            }
        }
        for role in settings.roles.keys() {
            if role.parse::<Role>().is_err() {
                return Err(format!("routing.roles: unknown role {role:?}"));
            }
        }
        Ok(ModelRouter { settings })
    }

    pub fn aliases(&self) -> Vec<(String, Action)> {
        let mut list: Vec<(String, Action)> = self
            .settings
            .aliases
            .iter()
            .filter_map(|(alias, s)| {
                self.settings
                    .strategies
                    .get(s)
                    .map(|st| (alias.clone(), st.action))
            })
            .collect();
        list.sort();
        list
    }

    pub fn is_alias(&self, name: &str) -> bool {
        self.settings.aliases.contains_key(name)
    }

    /// Whether a role may use this model or alias.
    pub fn role_allows(&self, role: Role, model: &str) -> bool {
        match self.settings.roles.get(role.as_str()) {
            None => true,
            Some(patterns) => patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => model.starts_with(prefix),
                None => p == model,
            }),
        }
    }

    /// What to try for `requested`, or why the role may not.
    pub fn plan(&self, requested: &str, action: Action, role: Role) -> Result<Plan, GenerationError> {
        if !self.role_allows(role, requested) {
            return Err(GenerationError::ModelNotAllowed(requested.to_owned()));
        }
        let Some(mut name) = self.settings.aliases.get(requested).cloned() else {
            return Ok(Plan {
                chains: vec![vec![requested.to_owned()]],
            });
        };
        let mut chains = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        while let Some(strategy) = self.settings.strategies.get(&name) {
            if !action.accepts(strategy.action) {
                return Err(GenerationError::Invalid(format!(
                    "{requested} is for {}, not {}",
                    strategy.action.as_str(),
                    action.as_str()
                )));
            }
            seen.push(name.clone());
            chains.push(strategy.models.clone());
            match &strategy.fallback {
                Some(next) if !seen.contains(next) => name = next.clone(),
                _ => break,
            }
        }
        Ok(Plan { chains })
    }

    /// Runs `call` on each model of the plan until one succeeds or a failure is
    /// permanent. Returns the value and the model that gave it.
    pub async fn run<T, F, Fut>(&self, plan: &Plan, mut call: F) -> Result<(T, String), GenerationError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<T, GenerationError>>,
    {
        let mut last = None;
        for model in plan.chains.iter().flatten() {
            match call(model.clone()).await {
                Ok(value) => return Ok((value, model.clone())),
                Err(e) if is_transient(&e) => {
                    tracing::info!(model, error = %e, "model failed transiently; trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| GenerationError::Invalid("no model to try".into())))
    }
}

/// Failures worth trying another model for.
pub fn is_transient(e: &GenerationError) -> bool {
    match e {
        GenerationError::Upstream(u) => match u {
            UpstreamError::Unreachable(_) | UpstreamError::Timeout(_) | UpstreamError::InvalidResponse(_) => {
                true
            }
            UpstreamError::MidStream { .. } => true,
            // 404: the model has no endpoints (or is gone) right now.
            UpstreamError::Status { status, .. } => matches!(status, 404 | 408 | 429 | 500..=599),
            UpstreamError::NotConfigured => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> ModelRouter {
        let settings: RoutingSettings = toml::from_str(
            r#"
            [strategies.fast]
            action = "chat"
            models = ["a/one", "a/two"]
            fallback = "safe"
            [strategies.safe]
            action = "chat"
            models = ["b/one"]
            fallback = "fast"
            [strategies.pictures]
            action = "image"
            models = ["i/one"]
            [aliases]
            "atelier/chat" = "fast"
            "atelier/image" = "pictures"
            [roles]
            user = ["atelier/*", "a/one"]
            "#,
        )
        .expect("settings");
        ModelRouter::new(settings).expect("valid")
    }

    #[test]
    fn aliases_resolve_to_chains_with_fallbacks_and_no_loops() {
        let r = router();
        let plan = r.plan("atelier/chat", Action::Chat, Role::User).expect("plan");
        assert_eq!(
            plan.chains,
            vec![
                vec!["a/one".to_owned(), "a/two".to_owned()],
                vec!["b/one".to_owned()]
            ]
        );
        assert_eq!(
            r.plan("atelier/chat", Action::Text, Role::User)
                .expect("text takes chat strategies")
                .chains
                .len(),
            2
        );
        assert!(matches!(
            r.plan("atelier/image", Action::Chat, Role::User),
            Err(GenerationError::Invalid(_))
        ));
        assert_eq!(
            r.plan("x/y", Action::Chat, Role::Admin).expect("plain").chains,
            vec![vec!["x/y".to_owned()]]
        );
    }

    #[test]
    fn roles_are_restricted_by_pattern() {
        let r = router();
        assert!(r.role_allows(Role::User, "atelier/anything"));
        assert!(r.role_allows(Role::User, "a/one"));
        assert!(!r.role_allows(Role::User, "a/two"));
        assert!(
            r.role_allows(Role::Admin, "a/two"),
            "admins are not restricted here"
        );
        assert!(matches!(
            r.plan("a/two", Action::Chat, Role::User),
            Err(GenerationError::ModelNotAllowed(_))
        ));
    }

    #[test]
    fn invalid_settings_are_refused() {
        let bad: RoutingSettings = toml::from_str("[aliases]\n\"x\" = \"nope\"").expect("parses");
        assert!(ModelRouter::new(bad).is_err());
        let empty: RoutingSettings =
            toml::from_str("[strategies.s]\naction = \"chat\"\nmodels = []").expect("parses");
        assert!(ModelRouter::new(empty).is_err());
    }

    #[tokio::test]
    async fn transient_failures_move_on_and_permanent_ones_stop() {
        let r = router();
        let plan = r.plan("atelier/chat", Action::Chat, Role::Admin).expect("plan");
        let status = |s: u16| {
            GenerationError::Upstream(UpstreamError::Status {
                status: s,
                message: String::new(),
                retry_after: None,
                metadata: None,
            })
        };
        let mut tried = Vec::new();
        let result = r
            .run(&plan, |m| {
                tried.push(m.clone());
                let outcome = if m == "b/one" {
                    Ok(m.clone())
                } else {
                    Err(status(502))
                };
                async move { outcome }
            })
            .await;
        assert_eq!(result.map(|(_, served)| served).ok(), Some("b/one".to_owned()));
        assert_eq!(tried, ["a/one", "a/two", "b/one"], "both levels of fallback");

        let mut tried = Vec::new();
        let result = r
            .run(&plan, |m| {
                tried.push(m);
                async { Err::<(), _>(status(402)) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(tried.len(), 1, "a permanent failure stops at once");
    }
}
