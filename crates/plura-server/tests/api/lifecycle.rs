//! Agents' lifecycle as the server sees it: login, takeover, heartbeats and silence, logout,
//! restarts, concurrent logins, several servers, and the policies that delete.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use sqlx::Connection;

use plura_proto::{AgentStatus, AuditAction, AuditList, EventKind};
use plura_server::fleet::LivenessPolicy;
use plura_server::store::AgentStore;
use plura_testkit::{Db, TestServer, eventually, fast_policy, login};

use crate::STOP_WITHIN;

pub async fn first_login_registers_and_relogin_finds_the_same_entry(db: Db) {
    let server = TestServer::start(db).await;
    let first = server.login("172.31.64.4", "waf-1").await;
    assert!(first.created);
    assert_eq!(first.heartbeat_interval_s, 1);

    let again = server.login("172.31.64.4", "waf-1").await;
    assert!(!again.created);
    assert_eq!(again.agent_id, first.agent_id);

    // Same IP, other hostname: another agent (the pair is the identity).
    let other = server.login("172.31.64.4", "waf-2").await;
    assert!(other.created);
    assert_ne!(other.agent_id, first.agent_id);

    let list = server.agents("").await;
    assert_eq!(list.total, 2);
    let agent = server.agent(first.agent_id).await;
    assert_eq!(
        (agent.ip.as_str(), agent.hostname.as_str()),
        ("172.31.64.4", "waf-1")
    );
    assert_eq!(agent.status, AgentStatus::Running);
    assert_eq!(agent.source_ip.as_deref(), Some("127.0.0.1"));
    assert!(agent.enabled);
    let kinds: Vec<EventKind> = server
        .events(first.agent_id)
        .await
        .iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(kinds, [EventKind::Login, EventKind::Registered]);
    server.finish().await;
}

pub async fn new_machine_id_on_a_known_identity_is_a_takeover(db: Db) {
    let server = TestServer::start(db).await;
    let mut body = login("172.31.80.4", "waf-2");
    body.machine_id = Some("i-0aaa".into());
    let first = server.login_with(&body).await;
    body.machine_id = Some("i-0bbb".into());
    let second = server.login_with(&body).await;
    assert_eq!(first.agent_id, second.agent_id);
    assert!(!second.created);

    let events = server.events(first.agent_id).await;
    assert_eq!(events[0].event, EventKind::Takeover);
    assert!(
        events[0].detail.contains("i-0aaa") && events[0].detail.contains("i-0bbb"),
        "{:?}",
        events[0]
    );
    assert!(
        events[0].detail.contains("still running"),
        "{:?}",
        events[0]
    );
    let agent = server.agent(first.agent_id).await;
    assert_eq!(agent.machine_id.as_deref(), Some("i-0bbb"));
    assert_eq!(
        agent.last_takeover_at,
        Some(events[0].at),
        "the row is marked"
    );

    // The same holder again: a plain login.
    server.login_with(&body).await;
    assert_eq!(
        server.events(first.agent_id).await[0].event,
        EventKind::Login
    );

    // The same source leaving the machine id out (a host behind the same NAT or proxy): a
    // takeover all the same, and counted, since the holder was still running.
    let r = server.login_as(&login("172.31.80.4", "waf-2")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let event = &server.events(first.agent_id).await[0];
    assert_eq!(event.event, EventKind::Takeover);
    assert!(
        event.detail.contains("machine id i-0bbb -> none")
            && event.detail.contains("still running"),
        "{event:?}"
    );

    // Another host (here 127.0.0.2) claiming the identity without a machine id: seen all the
    // same, and counted since the holder was still running.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let r = elsewhere
        .post(server.url("/api/v1/agents/login"))
        .bearer_auth(&server.enrollment)
        .json(&login("172.31.80.4", "waf-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let event = &server.events(first.agent_id).await[0];
    assert_eq!(event.event, EventKind::Takeover);
    assert!(
        event.detail.starts_with("source 127.0.0.1 -> 127.0.0.2")
            && event.detail.contains("still running"),
        "{event:?}"
    );
    let metrics = server.request(Method::GET, "/metrics", None).await;
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("plura_takeovers_of_running_agents_total 3"),
        "{text}"
    );
    server.finish().await;
}

pub async fn silent_agent_turns_stopped_and_comes_back_on_heartbeat(db: Db) {
    let server = TestServer::start(db).await;
    let id = server.login("10.0.0.1", "edr-1").await.agent_id;
    assert_eq!(server.heartbeat(id).await, StatusCode::NO_CONTENT);

    let stopped = server
        .wait_for_status(id, AgentStatus::Stopped, STOP_WITHIN)
        .await;
    assert_eq!(stopped.hostname, "edr-1", "a stop is never a delete");
    assert_eq!(server.agents("").await.total, 1);
    assert_eq!(server.events(id).await[0].event, EventKind::Stopped);

    assert_eq!(server.heartbeat(id).await, StatusCode::NO_CONTENT);
    assert_eq!(server.agent(id).await.status, AgentStatus::Running);
    assert_eq!(server.events(id).await[0].event, EventKind::Resumed);
    server.finish().await;
}

/// Agents heard every interval stay running through several silence limits, though a server
/// alone on its database writes their last-seen only every second heartbeat; one that goes
/// silent is still stopped.
pub async fn agents_heard_every_interval_stay_running_with_half_the_writes(db: Db) {
    let server = TestServer::start(db).await;
    let mut ids = Vec::new();
    for n in 1..=4 {
        let ip = format!("10.7.0.{n}");
        ids.push(server.login(&ip, &format!("beat-{n}")).await.agent_id);
    }
    let (silent, beating) = (ids[0], &ids[1..]);
    let mut beats = 0u64;
    let started = Instant::now();
    // Four silence limits (3 s each, at the tests' 1 s interval).
    while started.elapsed() < Duration::from_secs(12) {
        let round = Instant::now();
        for &id in beating {
            assert_eq!(server.heartbeat(id).await, StatusCode::NO_CONTENT);
            beats += 1;
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(round.elapsed())).await;
    }
    assert_eq!(server.agent(silent).await.status, AgentStatus::Stopped);
    for &id in beating {
        let events = server.events(id).await;
        assert!(
            events.iter().all(|e| e.event != EventKind::Stopped),
            "agent {id} was taken for silent: {events:?}"
        );
        assert_eq!(server.agent(id).await.status, AgentStatus::Running);
    }
    let flushed = server.metric("plura_last_seen_flushed_rows_total").await;
    let share = flushed / beats as f64;
    println!("{db:?}: {flushed} last-seen rows written for {beats} heartbeats");
    match db {
        // Every second heartbeat, and a few more at the edges.
        Db::Sqlite => assert!(share <= 0.6, "{flushed} of {beats} written"),
        // Several servers may share it: each heartbeat is written at the next tick.
        Db::Postgres => assert!(share >= 0.8, "{flushed} of {beats} written"),
    }
    server.finish().await;
}

pub async fn logout_stops_at_once_without_deleting(db: Db) {
    let server = TestServer::start(db).await;
    let id = server.login("10.0.0.2", "siem-1").await.agent_id;
    assert_eq!(server.logout(id).await, StatusCode::NO_CONTENT);
    let agent = server.agent(id).await;
    assert_eq!(agent.status, AgentStatus::Stopped);
    assert_eq!(server.events(id).await[0].event, EventKind::Logout);

    // The goodbye revoked the key: it no longer brings the agent back.
    assert_eq!(server.heartbeat(id).await, StatusCode::UNAUTHORIZED);
    assert_eq!(server.logout(id).await, StatusCode::UNAUTHORIZED);
    assert_eq!(server.agent(id).await.status, AgentStatus::Stopped);

    // The next boot of the same host is the same entry, running again.
    let again = server.login("10.0.0.2", "siem-1").await;
    assert_eq!((again.agent_id, again.created), (id, false));
    assert_eq!(server.agent(id).await.status, AgentStatus::Running);
    server.finish().await;
}

pub async fn restart_keeps_every_agent_and_its_last_seen(db: Db) {
    let server = TestServer::start(db).await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(
            server
                .login(&format!("10.1.0.{n}"), &format!("waf-{n}"))
                .await
                .agent_id,
        );
    }
    let logged_in = server.agent(ids[0]).await.last_seen_at.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(server.heartbeat(ids[0]).await, StatusCode::NO_CONTENT);
    let heard = server.agent(ids[0]).await.last_seen_at.unwrap();
    assert!(heard > logged_in);

    // Graceful shutdown flushes the heartbeat held in memory.
    let server = server.restart().await;
    let list = server.agents("?sort=id").await;
    let restored: Vec<i64> = list.items.iter().map(|a| a.id).collect();
    assert_eq!(restored, ids);
    assert!(list.items.iter().all(|a| a.status == AgentStatus::Running));
    assert_eq!(server.agent(ids[0]).await.last_seen_at, Some(heard));
    // The restarted server learns the running agents and their keys before their first
    // heartbeats, so it answers them from memory.
    eventually("the running agents are known", STOP_WITHIN, || async {
        let metrics = server.request(Method::GET, "/metrics", None).await;
        let text = metrics.text().await.unwrap();
        text.contains("plura_tracked_agents 3").then_some(())
    })
    .await;

    // Agents keep their ids: heartbeats go on without a new login.
    for id in &ids {
        assert_eq!(server.heartbeat(*id).await, StatusCode::NO_CONTENT);
    }
    assert_eq!(server.agents("").await.total, 3);
    server.finish().await;
}

pub async fn concurrent_first_logins_of_one_identity_make_one_entry(db: Db) {
    let server = TestServer::start(db).await;
    let logins = (0..24).map(|_| server.login("10.2.0.1", "burst"));
    let answers = futures::future::join_all(logins).await;
    let created = answers.iter().filter(|a| a.created).count();
    assert_eq!(created, 1, "exactly one login registers");
    assert!(answers.iter().all(|a| a.agent_id == answers[0].agent_id));

    let distinct = (0..24).map(|n| {
        let server = &server;
        async move {
            server
                .login(&format!("10.2.1.{n}"), &format!("host-{n}"))
                .await
        }
    });
    let answers = futures::future::join_all(distinct).await;
    assert!(answers.iter().all(|a| a.created));
    assert_eq!(server.agents("").await.total, 25);

    // Interleaved bursts of several identities through two servers at once, so logins of one
    // identity share a batch, and batches on the two servers race for the same first insert.
    let other = server.another().await;
    let identities = 12;
    let logins = (0..identities * 8).map(|n| {
        let through = if n % 2 == 0 { &server } else { &other };
        let k = n % identities;
        async move {
            (
                k,
                through
                    .login(&format!("10.2.2.{k}"), &format!("mix-{k}"))
                    .await,
            )
        }
    });
    let answers = futures::future::join_all(logins).await;
    // Asked through a server that issued none of the keys, the database decides alone.
    let fresh = server.another().await;
    for k in 0..identities {
        let mine: Vec<_> = answers
            .iter()
            .filter(|(i, _)| *i == k)
            .map(|(_, a)| a)
            .collect();
        assert_eq!(mine.iter().filter(|a| a.created).count(), 1, "identity {k}");
        assert!(mine.iter().all(|a| a.agent_id == mine[0].agent_id));
        assert_eq!(
            server.events(mine[0].agent_id).await.len(),
            8,
            "one event per login"
        );
        let mut working = 0;
        for answer in &mine {
            let url = fresh.url(&format!("/api/v1/agents/{}/heartbeat", answer.agent_id));
            let response = fresh
                .http
                .post(url)
                .bearer_auth(&answer.agent_key)
                .send()
                .await;
            working += usize::from(response.unwrap().status() == StatusCode::NO_CONTENT);
        }
        assert_eq!(
            working, 1,
            "only the last login's key works for identity {k}"
        );
    }
    assert_eq!(server.agents("").await.total, 25 + identities as u64);
    fresh.finish().await;
    other.finish().await;
    server.finish().await;
}

pub async fn servers_sharing_a_database_agree(db: Db) {
    let a = TestServer::start(db).await;
    let b = a.another().await;
    let id = a.login("10.6.0.1", "shared-1").await.agent_id;
    assert_eq!(b.login("10.6.0.1", "shared-1").await.agent_id, id);

    // Logged in again through B, with a new key: A stops taking the old one once it has flushed,
    // and never writes its heartbeats.
    eventually("A refuses the key B replaced", STOP_WITHIN, || async {
        (a.heartbeat(id).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;

    // Heartbeats taken by B only keep the agent running for A too, past the silence limit.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        assert_eq!(b.heartbeat(id).await, StatusCode::NO_CONTENT);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(a.agent(id).await.status, AgentStatus::Running);
    assert!(
        a.events(id)
            .await
            .iter()
            .all(|e| e.event != EventKind::Stopped),
        "never taken for silent"
    );

    // Deleted through A: B stops taking its heartbeats once it has flushed.
    assert_eq!(a.delete_agent(id).await, StatusCode::NO_CONTENT);
    eventually("B learns of the delete", STOP_WITHIN, || async {
        (b.heartbeat(id).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    b.stop().await;
    a.finish().await;
}

pub async fn prune_policy_deletes_long_stopped_agents_with_an_audit_record(db: Db) {
    let policy = LivenessPolicy {
        prune_stopped_after: Some(Duration::from_secs(1)),
        ..fast_policy()
    };
    let server = TestServer::start_with(db, policy).await;
    let gone = server.login("10.5.0.1", "short-lived").await.agent_id;
    let kept = server.login("10.5.0.2", "long-lived").await.agent_id;
    server.wait_for_agent_index(2, STOP_WITHIN).await;
    assert_eq!(server.logout(gone).await, StatusCode::NO_CONTENT);

    eventually("the stopped agent is pruned", STOP_WITHIN, || async {
        assert_eq!(server.heartbeat(kept).await, StatusCode::NO_CONTENT);
        (server.agents("").await.total == 1).then_some(())
    })
    .await;
    assert_eq!(
        server.agents("").await.items[0].id,
        kept,
        "running agents stay"
    );
    assert_eq!(
        server.agents("?q=short-lived").await.total,
        0,
        "found no more"
    );
    let audit: AuditList = server.get("/api/v1/audit").await;
    assert_eq!(audit.items[0].action, AuditAction::Pruned);
    assert_eq!(audit.items[0].hostname.as_deref(), Some("short-lived"));
    assert_eq!(audit.items[0].actor, "system");
    server.finish().await;
}

pub async fn old_history_is_deleted_but_the_agent_stays(db: Db) {
    let policy = LivenessPolicy {
        keep_events_for: Some(Duration::from_secs(1)),
        ..fast_policy()
    };
    let server = TestServer::start_with(db, policy).await;
    let id = server.login("10.8.0.1", "long-lived").await.agent_id;
    assert_eq!(server.events(id).await.len(), 1);
    eventually("old events are deleted", STOP_WITHIN, || async {
        assert_eq!(server.heartbeat(id).await, StatusCode::NO_CONTENT);
        server.events(id).await.is_empty().then_some(())
    })
    .await;
    let agent = server.agent(id).await;
    assert_eq!(
        (agent.hostname.as_str(), agent.status),
        ("long-lived", AgentStatus::Running)
    );
    server.finish().await;
}

pub async fn each_agent_acts_only_on_itself_with_its_own_key(db: Db) {
    let server = TestServer::start(db).await;
    let a = server.login("10.9.0.1", "edr-a").await;
    let b = server.login("10.9.0.2", "edr-b").await;
    assert_ne!(a.agent_key, b.agent_key);

    // Another host, with the enrollment token every host has, or with its own key: refused.
    for stranger in [&server.enrollment, &b.agent_key, &server.admin] {
        for action in ["heartbeat", "logout"] {
            let status = server.agent_post_with(a.agent_id, action, stranger).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{action}");
        }
    }
    assert_eq!(server.agent(a.agent_id).await.status, AgentStatus::Running);
    assert_eq!(server.heartbeat(a.agent_id).await, StatusCode::NO_CONTENT);

    // Only a hash is stored.
    let stored = server.store().key_hash(a.agent_id).await.unwrap().unwrap();
    assert_eq!(
        stored.as_deref(),
        Some(plura_server::secret::hash_token(&a.agent_key).as_str())
    );

    // A new login of the identity issues a new key and revokes the old one.
    let again = server.login("10.9.0.1", "edr-a").await;
    assert_eq!(again.agent_id, a.agent_id);
    assert_ne!(again.agent_key, a.agent_key);
    let old = server
        .agent_post_with(a.agent_id, "heartbeat", &a.agent_key)
        .await;
    assert_eq!(old, StatusCode::UNAUTHORIZED, "the old key is revoked");
    assert_eq!(server.heartbeat(a.agent_id).await, StatusCode::NO_CONTENT);
    let kinds: Vec<EventKind> = server
        .events(a.agent_id)
        .await
        .iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(kinds, [EventKind::Login, EventKind::Registered]);

    // Through another server on the same database, the same: the newest key only.
    let other = server.another().await;
    let newest = other.login("10.9.0.1", "edr-a").await;
    assert_eq!(other.heartbeat(a.agent_id).await, StatusCode::NO_CONTENT);
    let limit = Duration::from_secs(10);
    eventually(
        "the first server refuses the key the second revoked",
        limit,
        || async {
            let status = server
                .agent_post_with(a.agent_id, "heartbeat", &again.agent_key)
                .await;
            (status == StatusCode::UNAUTHORIZED).then_some(())
        },
    )
    .await;
    let status = server
        .agent_post_with(a.agent_id, "heartbeat", &newest.agent_key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    other.stop().await;
    server.finish().await;
}

/// Hostnames compare as DNS compares them (RFC 4343): `WAF-1.` is `waf-1`; look-alikes are
/// refused, naming the rule; and rows from before are brought to that form by the migration,
/// except where that would make two agents one, which the server reports.
pub async fn hostnames_compare_as_dns_does(db: Db) {
    let server = TestServer::start(db).await;
    let first = server.login("10.9.0.1", "waf-1").await;
    let again = server.login("10.9.0.1", "WAF-1.").await;
    assert_eq!((again.agent_id, again.created), (first.agent_id, false));
    assert_eq!(server.agent(first.agent_id).await.hostname, "waf-1");
    for look_alike in [
        "ｗａｆ-1",
        "wаf-1",
        "waf\u{3164}1",
        "waf-1\u{2800}",
        "wafe\u{301}",
    ] {
        let refused = server.login_as(&login("10.9.0.1", look_alike)).await;
        let body =
            plura_testkit::expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field")
                .await;
        assert!(
            body.message.contains("dot-separated labels of ASCII"),
            "{look_alike}: {}",
            body.message
        );
    }

    // Rows as an older server stored them: one alone, two that are one host.
    let alone = server.login("10.9.0.2", "mixed-case").await.agent_id;
    server.login("10.9.0.3", "dup").await;
    let twin = server.login("10.9.0.3", "dup-twin").await.agent_id;
    let mut sql = sqlx::AnyConnection::connect(server.database_url())
        .await
        .unwrap();
    for (id, stored) in [(alone, "Mixed-CASE."), (twin, "DUP.")] {
        sqlx::query("UPDATE agents SET hostname = $1 WHERE id = $2")
            .bind(stored)
            .bind(id)
            .execute(&mut sql)
            .await
            .unwrap();
    }
    let migration = match db {
        Db::Sqlite => include_str!("../../migrations/sqlite/0017_normal_hostnames.sql"),
        Db::Postgres => include_str!("../../migrations/postgres/0017_normal_hostnames.sql"),
    };
    sqlx::raw_sql(migration).execute(&mut sql).await.unwrap();
    let store = server.store();
    let hostname = |id| async move { store.agent(id).await.unwrap().unwrap().hostname };
    assert_eq!(hostname(alone).await, "mixed-case");
    assert_eq!(hostname(twin).await, "DUP.", "not merged into its twin");
    let reported = server
        .store()
        .hostnames_not_in_normal_form(10)
        .await
        .unwrap();
    assert_eq!(
        reported,
        [(twin, "10.9.0.3".to_string(), "DUP.".to_string())]
    );
    server.finish().await;
}
