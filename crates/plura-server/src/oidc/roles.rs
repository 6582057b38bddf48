//! Who a person of the identity provider is here: the role their claims give them (the highest
//! that matches), and the name their user is shown by.

use plura_proto::{MAX_CREDENTIAL_NAME_LEN, Role};
use serde_json::Value;

/// The claim values that give each role; a person matching none may not sign in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleRules {
    /// The claim read: a top-level name (`groups`), or a dotted path into nested objects
    /// (`realm_access.roles`, as Keycloak has them).
    pub claim: String,
    pub admin: Vec<String>,
    pub operator: Vec<String>,
    pub monitor: Vec<String>,
}

/// The role a person gets, and the claim value that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub role: Role,
    pub because: String,
}

impl RoleRules {
    pub fn is_empty(&self) -> bool {
        self.admin.is_empty() && self.operator.is_empty() && self.monitor.is_empty()
    }

    /// The claim's values among `claims` (one string, or a list of them); `None` if the claim is
    /// not there at all.
    pub fn values(&self, claims: &serde_json::Map<String, Value>) -> Option<Vec<String>> {
        let mut path = self.claim.split('.');
        let mut value = claims.get(path.next()?)?;
        for step in path {
            value = value.get(step)?;
        }
        Some(match value {
            Value::String(one) => vec![one.clone()],
            Value::Array(many) => many
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        })
    }

    /// The highest role any of `values` gives.
    pub fn grant(&self, values: &[String]) -> Option<Granted> {
        [
            (Role::Admin, &self.admin),
            (Role::Operator, &self.operator),
            (Role::Monitor, &self.monitor),
        ]
        .into_iter()
        .find_map(|(role, wanted)| {
            let value = values.iter().find(|v| wanted.contains(v))?;
            Some(Granted {
                role,
                because: format!("{}={value}", self.claim),
            })
        })
    }
}

/// What a person's user is named: `sso:` and the first of their preferred name, email, full
/// name or subject id that has something to show, without control characters and short enough
/// to be a user's name. The prefix keeps it apart from local users, whose names have no colon.
pub fn user_name(candidates: &[Option<&str>], subject: &str) -> String {
    const PREFIX: &str = "sso:";
    // Room for the few characters added when another person has the name already.
    let room = MAX_CREDENTIAL_NAME_LEN - PREFIX.len() - 9;
    let shown = candidates
        .iter()
        .flatten()
        .map(|text| clean(text))
        .find(|text| !text.is_empty())
        .unwrap_or_else(|| clean(subject));
    let mut name = String::from(PREFIX);
    for c in shown.chars() {
        if name.len() + c.len_utf8() > PREFIX.len() + room {
            break;
        }
        name.push(c);
    }
    name
}

/// `text` on one line: control characters gone, runs of white space made one space.
fn clean(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> RoleRules {
        RoleRules {
            claim: "groups".into(),
            admin: vec!["fleet-admins".into()],
            operator: vec!["fleet-ops".into(), "soc".into()],
            monitor: vec!["everyone".into()],
        }
    }

    fn claims(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn the_highest_matching_role_wins() {
        let rules = rules();
        let values = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let granted = rules.grant(&values(&["everyone", "soc", "fleet-admins"]));
        assert_eq!(
            granted,
            Some(Granted {
                role: Role::Admin,
                because: "groups=fleet-admins".into()
            })
        );
        assert_eq!(
            rules.grant(&values(&["everyone", "soc"])).unwrap().role,
            Role::Operator
        );
        assert_eq!(
            rules.grant(&values(&["everyone"])).unwrap().role,
            Role::Monitor
        );
        assert_eq!(rules.grant(&values(&["contractors"])), None);
        assert_eq!(rules.grant(&[]), None);
    }

    #[test]
    fn a_claim_is_a_string_a_list_or_a_path_into_objects() {
        let mut rules = rules();
        let one = claims(json!({"groups": "soc"}));
        assert_eq!(rules.values(&one), Some(vec!["soc".to_string()]));
        let many = claims(json!({"groups": ["a", 3, "b"]}));
        assert_eq!(rules.values(&many), Some(vec!["a".into(), "b".into()]));
        assert_eq!(rules.values(&claims(json!({"email": "x"}))), None);
        assert_eq!(
            rules.values(&claims(json!({"groups": {"x": 1}}))),
            Some(vec![])
        );
        rules.claim = "realm_access.roles".into();
        let nested = claims(json!({"realm_access": {"roles": ["fleet-ops"]}}));
        assert_eq!(rules.values(&nested), Some(vec!["fleet-ops".to_string()]));
        assert_eq!(rules.values(&claims(json!({"realm_access": "x"}))), None);
    }

    #[test]
    fn names_are_prefixed_clean_and_bounded() {
        assert_eq!(
            user_name(&[Some("alice"), Some("a@x.io")], "s1"),
            "sso:alice"
        );
        assert_eq!(user_name(&[None, Some("a@x.io")], "s1"), "sso:a@x.io");
        assert_eq!(user_name(&[Some(" \t"), None], "s1"), "sso:s1");
        assert_eq!(
            user_name(&[Some("Kim\n  Min\u{7}su")], "s"),
            "sso:Kim Min su"
        );
        let long = user_name(&[Some(&"가".repeat(40))], "s");
        assert!(long.len() <= MAX_CREDENTIAL_NAME_LEN - 9, "{}", long.len());
        assert!(long.starts_with("sso:가"));
    }
}
