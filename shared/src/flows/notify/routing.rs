//! Routing rules: call-start notifications go to a Slack channel chosen by a
//! metadata field (for example a qualification tier). Configured as JSON in
//! `NOTIFICATION_ROUTES`:
//! `[{"field": "tier", "equals": "enterprise", "slack_channel": "#vip-calls"}]`.
//! The first matching rule wins; no match keeps `SLACK_CHANNEL_ID`.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Route {
    pub field: String,
    pub equals: String,
    pub slack_channel: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationRoutes(Vec<Route>);

impl NotificationRoutes {
    pub fn parse(json: &str) -> Result<Self, String> {
        serde_json::from_str(json)
            .map(Self)
            .map_err(|e| format!("expected a JSON list of {{field, equals, slack_channel}}: {e}"))
    }

    /// The channel for a call with this metadata, if a rule matches.
    pub fn slack_channel(
        &self,
        metadata: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<String> {
        self.0
            .iter()
            .find(|route| match metadata.get(&route.field) {
                Some(serde_json::Value::String(s)) => *s == route.equals,
                Some(other) => serde_json::to_string(other).is_ok_and(|text| text == route.equals),
                None => false,
            })
            .map(|route| route.slack_channel.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_picks_the_channel() {
        let routes = NotificationRoutes::parse(
            r##"[{"field":"tier","equals":"enterprise","slack_channel":"#vip"},
                {"field":"seats","equals":"50","slack_channel":"#big"}]"##,
        )
        .unwrap();
        let meta = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert_eq!(
            routes.slack_channel(&meta(serde_json::json!({"tier": "enterprise"}))),
            Some("#vip".into())
        );
        assert_eq!(
            routes.slack_channel(&meta(serde_json::json!({"seats": 50}))),
            Some("#big".into())
        );
        assert_eq!(
            routes.slack_channel(&meta(serde_json::json!({"tier": "trial"}))),
            None
        );
        assert!(NotificationRoutes::parse("{}").is_err());
    }
}
