//! Credentials with a life cycle: tokens listed, revoked and expiring; users disabled, enabled,
//! deleted and given new passwords; sign-ins that end with them, on this server at once and on
//! every other within the cache's second, also when the change comes from the command line.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use plura_proto::{
    AuditAction, AuditList, CreatedToken, CreatedUser, Role, Session, Timestamp, TokenList,
    UserInfo, UserList,
};
use plura_server::credentials::COMMAND_LINE;
use plura_server::secret::hash_token;
use plura_server::store::{self, Actor, CredentialStore, SqlStore, UserChange};
use plura_testkit::{Db, TestServer, eventually, expect_error, json_ok};

/// Far longer than the second a credential is cached for: only a broken cache waits this long.
const REVOKED_WITHIN: Duration = Duration::from_secs(10);

async fn status_of(server: &TestServer, token: &str) -> StatusCode {
    server
        .request(Method::GET, "/api/v1/me", Some(token))
        .await
        .status()
}

/// Waits until `token` is refused by `server`.
async fn refused_soon(server: &TestServer, token: &str, what: &str) {
    eventually(what, REVOKED_WITHIN, || async {
        (status_of(server, token).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
}

/// The database as the command line opens it: another process's view, with no cache to clear.
async fn command_line_store(server: &TestServer) -> SqlStore {
    store::open(server.database_url()).await.unwrap()
}

fn command_line() -> Actor<'static> {
    Actor {
        name: COMMAND_LINE,
        at: Timestamp::now(),
    }
}

async fn audited(server: &TestServer) -> Vec<(AuditAction, String, String)> {
    let audit: AuditList = server.get("/api/v1/audit?limit=100").await;
    audit
        .items
        .into_iter()
        .map(|r| (r.action, r.actor, r.detail))
        .collect()
}

async fn sign_in(server: &TestServer, name: &str, password: &str) -> reqwest::Response {
    let body = json!({"username": name, "password": password});
    server
        .call(Method::POST, "/api/v1/session", None, Some(&body))
        .await
}

pub async fn tokens_are_listed_revoked_and_expire(db: Db) {
    let server = TestServer::start(db).await;
    let admin = Some(server.admin.as_str());
    let body = json!({"name": "ci deploy", "role": "operator", "expires_in": "90d"});
    let created: CreatedToken = json_ok(
        server
            .call(Method::POST, "/api/v1/tokens", admin, Some(&body))
            .await,
    )
    .await;
    let lifetime =
        created.info.expires_at.unwrap().as_millis() - created.info.created_at.as_millis();
    assert_eq!(lifetime, 90 * 86_400_000);
    assert_eq!(status_of(&server, &created.token).await, StatusCode::OK);

    // Names are unique and never look like ids; lifetimes are durations.
    for (body, status, code) in [
        (
            json!({"name": "ci deploy", "role": "monitor"}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            json!({"name": "42", "role": "monitor"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"name": "x\u{200b}y", "role": "monitor"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"name": "soon", "role": "monitor", "expires_in": "soon"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"name": "x", "role": "root"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_json",
        ),
    ] {
        let r = server
            .call(Method::POST, "/api/v1/tokens", admin, Some(&body))
            .await;
        if code == "bad_json" {
            assert!(r.status().is_client_error(), "{body}: {}", r.status());
        } else {
            expect_error(r, status, code).await;
        }
    }

    // Listed with when it was last used (written in batches), never with its secret.
    let used = eventually(
        "the token's use is recorded",
        Duration::from_secs(20),
        || async {
            let r = server.request(Method::GET, "/api/v1/tokens", admin).await;
            let text = r.text().await.unwrap();
            assert!(!text.contains(&created.token), "no secret in the list");
            let list: TokenList = serde_json::from_str(&text).unwrap();
            let ci = list.items.into_iter().find(|t| t.name == "ci deploy")?;
            ci.last_used_at
        },
    )
    .await;
    assert!(used >= created.info.created_at);

    // A live stream opened with it ends with it.
    let mut stream = server
        .request(Method::GET, "/api/v1/events/stream", Some(&created.token))
        .await;
    assert_eq!(stream.status(), StatusCode::OK);

    // Revoked through the API: refused at once here.
    let r = server
        .request(Method::DELETE, "/api/v1/tokens/ci deploy", admin)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status_of(&server, &created.token).await,
        StatusCode::UNAUTHORIZED
    );
    let r = server
        .request(Method::DELETE, "/api/v1/tokens/ci deploy", admin)
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let ended = tokio::time::timeout(REVOKED_WITHIN, async {
        while stream.chunk().await.ok().flatten().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the live stream of a revoked token ends");

    // Revoked by id from the command line (another process, no cache to clear): refused on the
    // running servers within the cached second, and on one started beside it.
    let other = server.another().await;
    let scripts = server.token(Role::Monitor).await;
    assert_eq!(status_of(&server, &scripts).await, StatusCode::OK);
    assert_eq!(status_of(&other, &scripts).await, StatusCode::OK);
    let cli = command_line_store(&server).await;
    let id = cli
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.role == Role::Monitor)
        .unwrap()
        .id;
    let revoked = plura_server::credentials::revoke_token(&cli, &id.to_string(), command_line())
        .await
        .unwrap();
    assert_eq!(revoked.map(|t| t.id), Some(id));
    refused_soon(&server, &scripts, "a token revoked on the command line").await;
    refused_soon(&other, &scripts, "a token revoked elsewhere").await;

    // An expired token is refused.
    let expired = "plura_expired-token-of-the-test";
    let past = Timestamp::from_millis(Timestamp::now().as_millis() - 1000);
    cli.add_token(
        "old",
        Role::Admin,
        &hash_token(expired),
        Some(past),
        command_line(),
    )
    .await
    .unwrap();
    assert_eq!(status_of(&server, expired).await, StatusCode::UNAUTHORIZED);

    let audit = audited(&server).await;
    for action in [AuditAction::TokenCreated, AuditAction::TokenRevoked] {
        assert!(
            audit
                .iter()
                .any(|(a, _, d)| *a == action && d.contains("ci deploy")),
            "{audit:?}"
        );
    }
    assert!(
        audit
            .iter()
            .any(|(a, actor, _)| *a == AuditAction::TokenRevoked && actor == COMMAND_LINE)
    );
    other.finish().await;
    server.finish().await;
}

pub async fn users_are_disabled_enabled_deleted_and_their_sign_ins_end(db: Db) {
    let server = TestServer::start(db).await;
    let admin = Some(server.admin.as_str());
    let created: CreatedUser = json_ok(
        server
            .call(
                Method::POST,
                "/api/v1/users",
                admin,
                Some(&json!({"name": "carol", "role": "operator"})),
            )
            .await,
    )
    .await;
    let password = created.password.expect("a password made for carol");
    let session: Session = json_ok(sign_in(&server, "carol", &password).await).await;
    assert_eq!(status_of(&server, &session.token).await, StatusCode::OK);

    // A sign-in is not a token: listed with its user, not among the tokens.
    let tokens: TokenList = server.get("/api/v1/tokens").await;
    assert!(tokens.items.iter().all(|t| t.name != "carol"), "{tokens:?}");
    let users: UserList = server.get("/api/v1/users").await;
    let carol = users.items.iter().find(|u| u.name == "carol").unwrap();
    assert_eq!(
        (carol.role, carol.sessions, carol.disabled_at),
        (Role::Operator, 1, None)
    );
    assert!(carol.last_sign_in_at.is_some());

    // Disabled: its sign-in ends at once, and it cannot sign in (the same answer as a wrong
    // password).
    let patch = |body: serde_json::Value| {
        let server = &server;
        async move {
            server
                .call(
                    Method::PATCH,
                    "/api/v1/users/carol",
                    Some(&server.admin),
                    Some(&body),
                )
                .await
        }
    };
    let carol: UserInfo = json_ok(patch(json!({"disabled": true})).await).await;
    assert!(carol.disabled_at.is_some());
    assert_eq!(carol.sessions, 0);
    assert_eq!(
        status_of(&server, &session.token).await,
        StatusCode::UNAUTHORIZED
    );
    let e = expect_error(
        sign_in(&server, "carol", &password).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert_eq!(e.message, "unknown user or wrong password");

    // Enabled again: it signs in; the sign-in it had stays ended.
    let carol: UserInfo = json_ok(patch(json!({"disabled": false})).await).await;
    assert_eq!(carol.disabled_at, None);
    let second: Session = json_ok(sign_in(&server, "carol", &password).await).await;
    assert_eq!(
        status_of(&server, &session.token).await,
        StatusCode::UNAUTHORIZED
    );

    // A new password ends its sign-ins; the old one no longer signs in.
    let r = patch(json!({"password": "short"})).await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    json_ok::<UserInfo>(patch(json!({"password": "a new long passphrase"})).await).await;
    assert_eq!(
        status_of(&server, &second.token).await,
        StatusCode::UNAUTHORIZED
    );
    expect_error(
        sign_in(&server, "carol", &password).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let third: Session = json_ok(sign_in(&server, "carol", "a new long passphrase").await).await;

    // Disabled from the command line (another process): the running server refuses the
    // sign-in within the cached second.
    let cli = command_line_store(&server).await;
    cli.change_user("carol", UserChange::Disable, command_line())
        .await
        .unwrap()
        .unwrap();
    refused_soon(
        &server,
        &third.token,
        "a sign-in of a user disabled on the command line",
    )
    .await;
    cli.change_user("carol", UserChange::Enable, command_line())
        .await
        .unwrap()
        .unwrap();

    // An admin signed in cannot lock itself out; another admin can delete a user.
    let (boss, boss_password) = server.user(Role::Admin).await;
    let boss_session: Session = json_ok(sign_in(&server, &boss, &boss_password).await).await;
    let r = server
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{boss}"),
            Some(&boss_session.token),
            Some(&json!({"disabled": true})),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "conflict").await;
    let r = server
        .request(
            Method::DELETE,
            &format!("/api/v1/users/{boss}"),
            Some(&boss_session.token),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "conflict").await;
    let fourth: Session = json_ok(sign_in(&server, "carol", "a new long passphrase").await).await;
    let r = server
        .request(
            Method::DELETE,
            "/api/v1/users/carol",
            Some(&boss_session.token),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status_of(&server, &fourth.token).await,
        StatusCode::UNAUTHORIZED
    );
    let r = server
        .request(Method::DELETE, "/api/v1/users/carol", admin)
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let users: UserList = server.get("/api/v1/users").await;
    assert!(users.items.iter().all(|u| u.name != "carol"));
    let r = server
        .call(
            Method::POST,
            "/api/v1/users",
            admin,
            Some(&json!({"name": boss, "role": "monitor", "password": "another long one"})),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "conflict").await;

    let audit = audited(&server).await;
    for action in [
        AuditAction::UserCreated,
        AuditAction::UserDisabled,
        AuditAction::UserEnabled,
        AuditAction::PasswordChanged,
        AuditAction::UserDeleted,
    ] {
        assert!(
            audit
                .iter()
                .any(|(a, _, d)| *a == action && d.contains("carol")),
            "{action}: {audit:?}"
        );
    }
    assert!(
        audit
            .iter()
            .any(|(a, actor, _)| *a == AuditAction::UserDeleted && *actor == boss)
    );
    server.finish().await;
}

/// A person the identity provider vouched for, as the callback hands them to the store.
fn person(subject: &str, name: &str, role: Role) -> store::SsoPerson {
    store::SsoPerson {
        issuer: "https://idp.example.com".into(),
        subject: subject.into(),
        name: name.into(),
        role,
        because: format!("groups={role}s"),
    }
}

/// Signs `person` in with a new session token; answers the token and what became of it.
async fn sso_sign_in(server: &TestServer, person: &store::SsoPerson) -> (String, store::SsoSignIn) {
    let token = plura_server::secret::new_token("plura");
    let now = Timestamp::now();
    let until = Timestamp::from_millis(now.as_millis() + 60_000);
    let outcome = server
        .store()
        .sso_sign_in(person, &hash_token(&token), now, until)
        .await
        .unwrap();
    (token, outcome)
}

/// People of the identity provider are users keyed by (issuer, subject), never the local user of
/// the same name; their role is set at each sign-in, a disabled one stays out, and they have no
/// password here. (The whole flow, with a real provider, is in the console's tests.)
pub async fn people_of_the_identity_provider_are_users_apart(db: Db) {
    let server = TestServer::start(db).await;
    let (token, outcome) = sso_sign_in(&server, &person("s-1", "sso:alice", Role::Admin)).await;
    let started = |name: &str, made| store::SsoSignIn::Started {
        name: name.into(),
        made,
    };
    assert_eq!(outcome, started("sso:alice", true));
    let me: plura_proto::WhoAmI = json_ok(
        server
            .request(Method::GET, "/api/v1/me", Some(&token))
            .await,
    )
    .await;
    assert_eq!((me.name.as_str(), me.role), ("sso:alice", Role::Admin));

    // Signed in again with fewer groups: the role follows; the user is the same one.
    let (token, outcome) = sso_sign_in(&server, &person("s-1", "sso:alice", Role::Monitor)).await;
    assert_eq!(outcome, started("sso:alice", false));
    let me: plura_proto::WhoAmI = json_ok(
        server
            .request(Method::GET, "/api/v1/me", Some(&token))
            .await,
    )
    .await;
    assert_eq!(me.role, Role::Monitor);

    // Another person who prefers the same name is another user.
    let (_, outcome) = sso_sign_in(&server, &person("s-2", "sso:alice", Role::Operator)).await;
    let store::SsoSignIn::Started {
        name: other,
        made: true,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(
        other.starts_with("sso:alice~") && other.len() == "sso:alice~".len() + 8,
        "{other}"
    );

    let users: UserList = server.get("/api/v1/users").await;
    let alice = users.items.iter().find(|u| u.name == "sso:alice").unwrap();
    assert_eq!(alice.sso_issuer.as_deref(), Some("https://idp.example.com"));
    assert_eq!(alice.sessions, 2);

    // No password gets them in, and none can be given to them.
    let refused = sign_in(&server, "sso:alice", "").await;
    expect_error(refused, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let set = server
        .call(
            Method::PATCH,
            "/api/v1/users/sso:alice",
            Some(&server.admin),
            Some(&json!({"password": "a-long-enough-password"})),
        )
        .await;
    let body = expect_error(set, StatusCode::CONFLICT, "conflict").await;
    assert!(
        body.message.contains("identity provider"),
        "{}",
        body.message
    );

    // Disabled by an admin: their sign-ins end, and the next one is refused and audited.
    let disable = server
        .call(
            Method::PATCH,
            "/api/v1/users/sso:alice",
            Some(&server.admin),
            Some(&json!({"disabled": true})),
        )
        .await;
    assert_eq!(disable.status(), StatusCode::OK);
    refused_soon(&server, &token, "a disabled person's sign-in").await;
    let (_, outcome) = sso_sign_in(&server, &person("s-1", "sso:alice", Role::Admin)).await;
    assert_eq!(
        outcome,
        store::SsoSignIn::Disabled {
            name: "sso:alice".into()
        }
    );
    let audit = audited(&server).await;
    assert!(
        audit
            .iter()
            .any(|(action, actor, detail)| *action == AuditAction::SsoRefused
                && actor == "sso:alice"
                && detail.contains("disabled")),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|(action, _, detail)| *action == AuditAction::SsoSignedIn
                && detail.contains("groups=admins")
                && detail.contains("user made"))
    );

    // Without an identity provider set up, its routes say so.
    for method in [Method::GET, Method::POST] {
        let offer = server
            .call(method, "/api/v1/session/sso", None, None::<&()>)
            .await;
        expect_error(offer, StatusCode::NOT_FOUND, "not_found").await;
    }
    let login = server.request(Method::GET, "/auth/oidc/login", None).await;
    assert_eq!(login.status(), StatusCode::NOT_FOUND);
    assert!(login.headers().contains_key("content-security-policy"));
    assert!(login.text().await.unwrap().contains("not set up"));
}
