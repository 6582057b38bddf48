//! The OpenAPI document's frame: its title and tags, the bearer schemes, and the error answers
//! every operation can give, written once here rather than on each route.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi as DeriveOpenApi};

#[derive(DeriveOpenApi)]
#[openapi(
    info(title = "PLURA Fleet", description = "Agent registry and liveness of PLURA host agents"),
    modifiers(&BearerTokens),
    tags(
        (name = "agent", description = "Called by agents: login with the enrollment token, the rest with the agent's own key"),
        (name = "fleet", description = "Called by people and scripts, with a role token"),
        (name = "alerts", description = "Webhooks that alerts go to, and their deliveries"),
        (name = "credentials", description = "API tokens and console users (admins)"),
        (name = "cloud", description = "What plura-eni watch reports from EC2: why silent agents went silent, and which instances have no agent"),
        (name = "ops", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["enrollment_token", "agent_key", "api_token"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// Adds to every operation the `{error, message}` answers the server can give it besides its
/// own: unreadable input, missing credentials, limits, and its own failures.
pub fn with_common_errors(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ];
        for operation in operations.into_iter().flatten() {
            let has_body = operation.request_body.is_some();
            let secured = operation
                .security
                .as_ref()
                .is_some_and(|alternatives| !alternatives.is_empty());
            let role = operation.security.as_ref().is_some_and(|alternatives| {
                serde_json::to_value(alternatives)
                    .is_ok_and(|v| v.to_string().contains("api_token"))
            });
            let errors: [(&str, &str, bool); 11] = [
                ("400", "A body, path or query that cannot be read", true),
                ("401", "No credential, or not one this route takes", secured),
                ("403", "The role of the token is not enough", role),
                ("404", "No such agent or webhook", path.contains("{id}")),
                ("408", "The request was not sent in time", true),
                ("413", "The body is larger than 64 KiB", true),
                ("415", "The body is not JSON", has_body),
                ("422", "A field breaks its rule", has_body),
                ("429", "Too many tries; see Retry-After", has_body),
                ("500", "The server failed; see its log", true),
                (
                    "503",
                    "The database is busy or unreachable; try again",
                    true,
                ),
            ];
            for (status, description, applies) in errors {
                if applies {
                    add_error(operation, status, description);
                }
            }
        }
    }
}

fn add_error(operation: &mut Operation, status: &str, description: &str) {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build();
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert(response.into());
}
