//! Logins as the store writes them: answered as stored, in id order, and new identities the
//! agent index has not heard of.

use super::*;
use crate::store::sql::testing::{
    login, store_on_a_file, store_on_postgres, waits_for_the_first_holding_no_other,
};
use crate::store::{AgentStore, Store};
use plura_proto::PatchAgent;

/// A login answers the agent as it left it in the database, though only its id (and, for
/// a registered agent, what the login kept of it) is read back.
async fn answered_as_stored(store: &SqlStore, login: Login) -> LoginOutcome {
    let outcome = store.login(login).await.unwrap();
    let stored = store
        .agent(outcome.changed.agent.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.changed.agent, stored);
    outcome
}

#[tokio::test]
async fn a_login_answers_the_agent_as_stored() {
    let (_dir, store) = store_on_a_file().await;
    let mut first = login("10.0.0.1", "web-1");
    first.request.machine_id = Some("machine-1".into());
    first.source_ip = Some("192.0.2.7".into());
    first.request.cloud = CloudLabels {
        instance_id: Some("i-0123".into()),
        zone: Some("ap-northeast-2a".into()),
        instance_type: Some("t3.micro".into()),
        asg: Some("web".into()),
    };
    let registered = answered_as_stored(&store, first).await;
    assert!(registered.created);

    // What the login keeps: an operator's switch and group, the machine id it does not
    // give, the time it was registered.
    let id = registered.changed.agent.id;
    let patch = PatchAgent {
        enabled: Some(false),
        group: Some(Some("edge".into())),
    };
    store
        .patch(id, &patch, "admin", Timestamp::now())
        .await
        .unwrap();
    let mut again = login("10.0.0.1", "web-1");
    again.source_ip = Some("192.0.2.8".into());
    let taken_over = answered_as_stored(&store, again).await;
    assert_eq!(taken_over.changed.events[0].event, EventKind::Takeover);
    let agent = &taken_over.changed.agent;
    assert!(!agent.enabled);
    assert_eq!(agent.group.as_deref(), Some("edge"));
    assert_eq!(agent.machine_id.as_deref(), Some("machine-1"));
    assert!(agent.last_takeover_at.is_some());
}

/// Whatever order its logins came in and its agents' rows lie in, a batch takes them in the
/// order of their ids.
#[tokio::test]
async fn a_login_batch_takes_its_agents_in_id_order() {
    let (database, store) = store_on_postgres().await;
    let logins: Vec<Login> = (1..=20)
        .map(|n| login(&format!("10.0.0.{n}"), &format!("web-{n}")))
        .collect();
    let registered = together(&store, logins.clone()).await.unwrap();
    let first = registered.iter().map(|o| o.changed.agent.id).min().unwrap();
    // Its row written again lies after the others in the table; the batch lists it last.
    store.login(logins[0].clone()).await.unwrap();
    let batch = {
        let store = store.clone();
        async move { together(&store, logins.into_iter().rev()).await }
    };
    let outcomes = waits_for_the_first_holding_no_other(&database.url, first, batch)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 20);
    assert!(outcomes.iter().all(|o| !o.created));
    store.close().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_login_taken_for_unheard_of_finds_the_agent_registered_meanwhile() {
    let (_dir, store) = store_on_a_file().await;
    let first = store
        .login(Login {
            unheard_of: true,
            ..login("10.0.0.1", "web-1")
        })
        .await
        .unwrap();
    assert!(first.created);

    // Registered behind the read model's back, as another server's login not yet told is.
    sqlx::query(
        "INSERT INTO agents (ip, ip_key, hostname, status, enabled, kind, os, version, \
         registered_at) VALUES ('10.0.0.2', '', 'web-2', 'stopped', 1, 'waf', 'Linux', \
         '1', 0)",
    )
    .execute(&store.pool)
    .await
    .unwrap();

    let unheard_of = |ip, hostname| Login {
        unheard_of: true,
        ..login(ip, hostname)
    };
    let batch = [
        unheard_of("10.0.0.2", "web-2"),
        unheard_of("10.0.0.3", "web-3"),
    ];
    let outcomes = together(&store, batch).await.unwrap();
    let [known, new] = &outcomes[..] else {
        panic!("two outcomes: {outcomes:?}");
    };
    assert!(!known.created, "the registered agent logged in again");
    assert_eq!(known.changed.agent.status, AgentStatus::Running);
    assert_eq!(known.changed.events[0].event, EventKind::Login);
    assert!(new.created);
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(count, 3);
}

/// Logins written as one batch; their outcomes, in the order given.
async fn together(
    store: &SqlStore,
    logins: impl IntoIterator<Item = Login>,
) -> Result<Vec<LoginOutcome>> {
    let mut batch: Vec<Pending> = logins.into_iter().map(Pending::new).collect();
    login_together(store, &mut batch).await?;
    batch.iter_mut().map(Pending::take_outcome).collect()
}
