//! What operators see and change: the list, CSV, summary, ON/OFF and groups, deletes, manual
//! registration, and the live stream.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;

use plura_proto::{
    Agent, AgentList, AgentStatus, AuditAction, AuditList, Change, CloudLabels, EventKind,
    FleetHistory, Role, Summary,
};
use plura_testkit::{
    Db, TestServer, assert_content_type, eventually, expect_error, json_ok, login,
};

use crate::STOP_WITHIN;

/// Logs in a small mixed fleet: 3 waf on Ubuntu, 2 edr on Rocky, one of the edr stopped.
pub async fn small_fleet(server: &TestServer) -> Vec<i64> {
    let mut ids = Vec::new();
    for (ip, host, kind, os) in [
        ("10.0.0.10", "waf-10", "waf", "Ubuntu 24.04"),
        ("10.0.0.9", "waf-9", "waf", "Ubuntu 24.04"),
        ("10.0.1.1", "web-gateway", "waf", "Ubuntu 24.04"),
        ("10.0.2.1", "edr-a", "edr", "Rocky 9"),
        ("10.0.2.2", "edr-b", "edr", "Rocky 9"),
    ] {
        let mut body = login(ip, host);
        body.kind = kind.into();
        body.os = os.into();
        let response = server.login_with(&body).await;
        ids.push(response.agent_id);
    }
    assert_eq!(server.logout(ids[4]).await, StatusCode::NO_CONTENT);
    ids
}

pub fn hostnames(list: &AgentList) -> Vec<&str> {
    list.items.iter().map(|a| a.hostname.as_str()).collect()
}

pub async fn list_filters_searches_sorts_and_pages(db: Db) {
    let server = TestServer::start(db).await;
    small_fleet(&server).await;

    assert_eq!(server.agents("?kind=edr").await.total, 2);
    assert_eq!(server.agents("?status=stopped").await.total, 1);
    assert_eq!(server.agents("?status=running&kind=edr").await.total, 1);
    assert_eq!(server.agents("?os=Rocky%209").await.total, 2);
    assert_eq!(
        server.agents("?status=&kind=").await.total,
        5,
        "empty means any"
    );
    // Search is case-insensitive, over ip and hostname among others, and literal.
    assert_eq!(
        hostnames(&server.agents("?q=GATEWAY").await),
        ["web-gateway"]
    );
    assert_eq!(server.agents("?q=10.0.2.").await.total, 2);
    assert_eq!(server.agents("?q=waf_").await.total, 0, "_ is no wildcard");
    assert_eq!(server.agents("?q=%25").await.total, 0, "% is no wildcard");

    // IPs sort by value, not as text.
    let by_ip = server.agents("?sort=ip&kind=waf").await;
    assert_eq!(hostnames(&by_ip), ["waf-9", "waf-10", "web-gateway"]);
    let by_host_desc = server.agents("?sort=-hostname").await;
    assert_eq!(hostnames(&by_host_desc)[0], "web-gateway");

    // Pages: total counts every match; pages do not overlap.
    let page1 = server.agents("?sort=hostname&per_page=2&page=1").await;
    let page3 = server.agents("?sort=hostname&per_page=2&page=3").await;
    assert_eq!(
        (page1.total, page1.items.len(), page3.items.len()),
        (5, 2, 1)
    );
    assert_eq!(hostnames(&page1), ["edr-a", "edr-b"]);
    assert_eq!(hostnames(&page3), ["web-gateway"]);
    assert!(server.agents("?per_page=2&page=9").await.items.is_empty());
    server.finish().await;
}

/// A search counts its matches up to a limit (past it the total says so), and still pages
/// through every match in order, on either side of the limit and of the deferred-join offset.
pub async fn a_search_counts_up_to_its_limit_and_pages_on(db: Db) {
    use plura_server::store::{AgentStore, Imported, ListFilter, ListStore, SEARCH_COUNT_LIMIT};

    let server = TestServer::start(db).await;
    small_fleet(&server).await;
    let store = server.store();
    let template = store.list(&ListFilter::default()).await.unwrap().agents[0].clone();
    let bulk = SEARCH_COUNT_LIMIT as u32 + 203;
    let imported: Vec<Imported> = (0..bulk)
        .map(|n| Imported {
            agent: Agent {
                ip: format!("10.9.{}.{}", n / 256, n % 256),
                hostname: format!("bulk-{n}"),
                status: if n % 10 == 0 {
                    AgentStatus::Stopped
                } else {
                    AgentStatus::Running
                },
                ..template.clone()
            },
            key_hash: None,
        })
        .collect();
    store.import(&imported).await.unwrap();
    // The import makes the server load its agent index again, which then answers the searches
    // below.
    server
        .wait_for_agent_index(5 + bulk as usize, STOP_WITHIN)
        .await;

    let all = server.agents("?q=BULK-&per_page=500").await;
    assert_eq!((all.total, all.total_exact), (SEARCH_COUNT_LIMIT, false));
    let ids: Vec<i64> = all.items.iter().map(|a| a.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order");
    assert_eq!(hostnames(&all)[..2], ["bulk-0", "bulk-1"]);
    // Under the limit the count is exact, a filter besides the search included.
    let stopped = server.agents("?q=bulk-&status=stopped").await;
    assert_eq!((stopped.total, stopped.total_exact), (121, true));
    assert!(
        stopped
            .items
            .iter()
            .all(|a| a.status == AgentStatus::Stopped)
    );
    let third = server
        .agents("?q=bulk-&status=stopped&sort=-id&per_page=50&page=3")
        .await;
    assert_eq!((third.total, third.items.len()), (121, 21));
    assert_eq!(hostnames(&third)[..2], ["bulk-200", "bulk-190"]);
    assert_eq!(hostnames(&third).last(), Some(&"bulk-0"));
    let newest = server.agents("?q=bulk-&sort=-id&per_page=3").await;
    assert_eq!(hostnames(&newest), ["bulk-1202", "bulk-1201", "bulk-1200"]);
    // Past the limit and past the deferred join's offset, pages go on to the last match.
    let deep = server.agents("?q=bulk-&per_page=100&page=12").await;
    assert_eq!(hostnames(&deep)[0], "bulk-1100");
    assert_eq!(deep.items.len(), 100);
    let last = server.agents("?q=bulk-&per_page=100&page=13").await;
    assert_eq!(hostnames(&last), ["bulk-1200", "bulk-1201", "bulk-1202"]);
    let by_host = server.agents("?q=bulk-12&sort=-hostname&per_page=2").await;
    assert_eq!(hostnames(&by_host), ["bulk-129", "bulk-128"]);
    // Counts without a search stay exact however many match.
    let everyone = server.agents("?status=running").await;
    assert_eq!((everyone.total, everyone.total_exact), (4 + 1082, true));
    // Deep pages of every agent (on PostgreSQL from the server's memory for the orders it
    // keeps) are the database's: a filter every agent passes makes the database answer.
    for sort in [
        "id",
        "-id",
        "ip",
        "-ip",
        "registered_at",
        "-registered_at",
        "-hostname",
    ] {
        for page in [11, 13] {
            let listed = server
                .agents(&format!("?sort={sort}&per_page=100&page={page}"))
                .await;
            let filtered = server
                .agents(&format!(
                    "?sort={sort}&per_page=100&page={page}&enabled=true"
                ))
                .await;
            assert_eq!(listed.total, 5 + u64::from(bulk));
            assert_eq!(listed.items.len(), if page == 11 { 100 } else { 8 });
            assert_eq!(
                hostnames(&listed),
                hostnames(&filtered),
                "sort={sort} page={page}"
            );
        }
    }
    server.finish().await;
}

pub async fn csv_holds_the_filtered_rows(db: Db) {
    let server = TestServer::start(db).await;
    small_fleet(&server).await;
    json_ok::<Agent>(
        server
            .call(
                Method::POST,
                "/api/v1/agents",
                Some(&server.admin),
                Some(&json!({"ip": "10.0.3.1", "hostname": "formula", "os": "=cmd|'/C+calc'!A0", "kind": "waf"})),
            )
            .await,
    )
    .await;
    let response = server
        .request(
            Method::GET,
            "/api/v1/agents.csv?kind=waf&sort=ip",
            Some(&server.admin),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_content_type(&response, "text/csv");
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with(r#""id","ip","hostname","status","enabled","group""#));
    assert_eq!(lines.len(), 1 + 4, "{text}");
    assert!(lines[1].contains(r#","10.0.0.9","waf-9","running","on","#));
    assert!(lines[4].contains(r#","formula","unknown","#), "{text}");
    assert!(lines[4].contains(r#","'=cmd|'/C+calc'!A0","#), "{text}");
    assert!(!text.contains("edr-"));
    server.finish().await;
}

/// Agents in two zones and groups (and one off EC2, logging in from the address it claims).
pub async fn cloud_labels_are_kept_filtered_and_exported(db: Db) {
    let server = TestServer::start(db).await;
    for (ip, zone, asg) in [
        ("10.1.0.1", "ap-northeast-2a", Some("waf-asg")),
        ("10.1.0.2", "ap-northeast-2a", None),
        ("10.1.0.3", "ap-northeast-2c", Some("waf-asg")),
    ] {
        let mut request = login(ip, &format!("cloud-{ip}"));
        request.cloud = CloudLabels {
            instance_id: Some(format!("i-{}", ip.replace('.', ""))),
            zone: Some(zone.into()),
            instance_type: Some("c6i.large".into()),
            asg: asg.map(String::from),
        };
        server.login_with(&request).await;
    }
    server.login("127.0.0.1", "on-premises").await;

    let hosts = |list: AgentList| -> Vec<String> { list.items.into_iter().map(|a| a.ip).collect() };
    assert_eq!(
        hosts(server.agents("?zone=ap-northeast-2a&sort=ip").await),
        ["10.1.0.1", "10.1.0.2"]
    );
    let waf = server.agents("?asg=waf-asg&sort=ip").await;
    assert_eq!(waf.total, 2);
    assert_eq!(
        waf.items[1].cloud.labels.zone.as_deref(),
        Some("ap-northeast-2c")
    );
    assert_eq!(
        hosts(server.agents("?zone=ap-northeast-2a&asg=waf-asg").await),
        ["10.1.0.1"]
    );
    // Claimed address vs the one the login came from (127.0.0.1 here).
    let differing = server.agents("?source_differs=true&sort=ip").await;
    assert_eq!(differing.total, 3);
    assert!(differing.items.iter().all(Agent::source_differs));
    let local = server.agents("?q=on-premises").await;
    assert!(!local.items[0].source_differs());
    assert_eq!(local.items[0].cloud.labels, CloudLabels::default());

    let csv = server
        .request(
            Method::GET,
            "/api/v1/agents.csv?asg=waf-asg&sort=ip",
            Some(&server.admin),
        )
        .await
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].ends_with(r#","instance_id","zone","instance_type","asg","verdict","verdict_at""#),
        "{csv}"
    );
    assert!(
        lines[1].ends_with(r#","i-10101","ap-northeast-2a","c6i.large","waf-asg","","""#),
        "{csv}"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    server.finish().await;
}

/// The chart's figures: counts sampled by the server, the most of each per interval, in SQL.
pub async fn the_fleet_over_time_is_sampled(db: Db) {
    let server = TestServer::start(db).await;
    let ids = small_fleet(&server).await;
    // The running ones keep beating: otherwise they are stopped once the server has run for a
    // silence limit, and a slow first sample (a busy machine) would already count them stopped.
    let beat = |running: &'static [usize]| {
        let (server, ids) = (&server, &ids);
        async move {
            for &n in running {
                assert_eq!(server.heartbeat(ids[n]).await, StatusCode::NO_CONTENT);
            }
        }
    };
    let history = eventually("a sample of the fleet", STOP_WITHIN, || async {
        beat(&[0, 1, 2, 3]).await;
        let history: FleetHistory = server.get("/api/v1/fleet/history?range=1h").await;
        // Shown only if the test fails.
        println!("last point: {:?}", history.points.last());
        history
            .points
            .last()
            // A point is the most of each status within its minute: a sample taken between
            // the fifth login and the logout saw 5 running.
            .is_some_and(|p| (4..=5).contains(&p.running) && p.stopped == 1)
            .then_some(history)
    })
    .await;
    assert_eq!(history.step_s, 60);
    assert!(history.from < history.to);
    let point = history.points.last().unwrap();
    assert!(point.at >= history.from && point.at <= history.to);
    assert_eq!(
        point.at.as_millis() % 60_000,
        0,
        "points start on the minute"
    );

    // A stop shows in the same interval as the most stopped, the most running staying.
    assert_eq!(server.logout(ids[0]).await, StatusCode::NO_CONTENT);
    eventually("the stop sampled", STOP_WITHIN, || async {
        beat(&[1, 2, 3]).await;
        let history: FleetHistory = server.get("/api/v1/fleet/history?range=1h").await;
        history
            .points
            .last()
            .is_some_and(|p| p.stopped == 2)
            .then_some(())
    })
    .await;
    for range in ["24h", "7d"] {
        let history: FleetHistory = server
            .get(&format!("/api/v1/fleet/history?range={range}"))
            .await;
        assert!(!history.points.is_empty(), "{range}");
    }
    let r = server
        .request(
            Method::GET,
            "/api/v1/fleet/history?range=1y",
            Some(&server.admin),
        )
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    server.finish().await;
}

pub async fn summary_counts_the_fleet(db: Db) {
    let server = TestServer::start(db).await;
    let ids = small_fleet(&server).await;
    let r = server
        .call(
            Method::PATCH,
            &format!("/api/v1/agents/{}", ids[0]),
            Some(&server.admin),
            Some(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let summary: Summary = server.get("/api/v1/summary").await;
    assert_eq!(summary.registered, 5);
    assert_eq!(
        (summary.running, summary.stopped, summary.unknown),
        (4, 1, 0)
    );
    assert_eq!((summary.enabled, summary.disabled), (4, 1));
    assert_eq!(summary.by_kind["waf"], 3);
    assert_eq!(summary.by_kind["edr"], 2);
    assert_eq!(summary.by_os["Rocky 9"], 2);
    server.finish().await;
}

pub async fn patch_switches_and_groups_with_history(db: Db) {
    let server = TestServer::start(db).await;
    let id = server.login("10.0.0.7", "waf-7").await.agent_id;
    let operator = server.token(Role::Operator).await;
    let path = format!("/api/v1/agents/{id}");
    let patch = |body: serde_json::Value| {
        let (server, path, operator) = (&server, &path, &operator);
        async move {
            json_ok::<Agent>(
                server
                    .call(Method::PATCH, path, Some(operator), Some(&body))
                    .await,
            )
            .await
        }
    };

    let agent = patch(json!({"enabled": false, "group": "web"})).await;
    assert!(!agent.enabled);
    assert_eq!(agent.group.as_deref(), Some("web"));
    assert_eq!(agent.status, AgentStatus::Running, "OFF is not a status");
    assert_eq!(server.agents("?group=web").await.total, 1);
    assert_eq!(server.agents("?enabled=false").await.total, 1);

    let agent = patch(json!({"enabled": false})).await;
    assert_eq!(agent.group.as_deref(), Some("web"), "absent fields stay");
    let agent = patch(json!({"group": null, "enabled": true})).await;
    assert_eq!((agent.enabled, agent.group), (true, None));

    let events = server.events(id).await;
    let kinds: Vec<EventKind> = events.iter().map(|e| e.event).collect();
    assert_eq!(
        kinds,
        [
            EventKind::GroupChanged,
            EventKind::Enabled,
            EventKind::GroupChanged,
            EventKind::Disabled,
            EventKind::Registered,
        ],
        "{events:?}"
    );
    assert!(events[0].detail.contains("web -> (none)"), "{events:?}");
    assert!(events[3].detail.contains("test-operator"), "{events:?}");
    server.finish().await;
}

pub async fn delete_keeps_an_audit_record_and_the_agent_can_return(db: Db) {
    let server = TestServer::start(db).await;
    let id = server.login("10.0.0.8", "waf-8").await.agent_id;
    let patch = json!({"enabled": false, "group": "dmz"});
    let path = format!("/api/v1/agents/{id}");
    let r = server
        .call(Method::PATCH, &path, Some(&server.admin), Some(&patch))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    server.wait_for_agent_index(1, STOP_WITHIN).await;
    assert_eq!(server.delete_agent(id).await, StatusCode::NO_CONTENT);
    assert_eq!(server.agents("").await.total, 0);
    assert_eq!(server.agents("?q=waf-8").await.total, 0, "found no more");
    assert_eq!(server.metric("plura_search_index_agents").await, 0.0);

    // Who did what, newest first: the delete, the switch and the group, and the tokens the
    // test server's command line made.
    let audit: AuditList = server.get("/api/v1/audit").await;
    let actions: Vec<(AuditAction, &str, &str)> = audit
        .items
        .iter()
        .map(|r| (r.action, r.actor.as_str(), r.detail.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (AuditAction::Deleted, "test-admin", "was running"),
            (AuditAction::GroupChanged, "test-admin", "(none) -> dmz"),
            (AuditAction::Disabled, "test-admin", ""),
            (AuditAction::EnrollmentTokenRotated, "command line", "made"),
            (
                AuditAction::TokenCreated,
                "command line",
                "\"test-admin\", admin"
            ),
        ]
    );
    let record = &audit.items[0];
    assert_eq!(
        (record.agent_id, record.hostname.as_deref()),
        (Some(id), Some("waf-8"))
    );
    assert_eq!(audit.items[4].agent_id, None);

    // The deleted agent's heartbeat is refused (as any key of no agent is), so it logs in and is
    // registered anew.
    assert_eq!(server.heartbeat(id).await, StatusCode::UNAUTHORIZED);
    let back = server.login("10.0.0.8", "waf-8").await;
    assert!(back.created);
    assert_ne!(back.agent_id, id);
    let kinds: Vec<EventKind> = server
        .events(back.agent_id)
        .await
        .iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        kinds,
        [EventKind::Registered],
        "the old history went with the old entry"
    );
    server.finish().await;
}

pub async fn manual_registration_is_unknown_until_login(db: Db) {
    let server = TestServer::start(db).await;
    let body = json!({"ip": "172.31.64.5", "hostname": "waf-3", "kind": "waf", "group": "dmz"});
    let created: Agent = json_ok(
        server
            .call(
                Method::POST,
                "/api/v1/agents",
                Some(&server.admin),
                Some(&body),
            )
            .await,
    )
    .await;
    assert_eq!(created.status, AgentStatus::Unknown);
    assert_eq!(created.last_seen_at, None);
    let r = server
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(&server.admin),
            Some(&body),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "conflict").await;

    let login = server.login("172.31.64.5", "waf-3").await;
    assert_eq!((login.agent_id, login.created), (created.id, false));
    let agent = server.agent(created.id).await;
    assert_eq!(agent.status, AgentStatus::Running);
    assert_eq!(
        agent.group.as_deref(),
        Some("dmz"),
        "the operator's group stays"
    );
    server.finish().await;
}

pub async fn live_stream_tells_changes(db: Db) {
    let server = TestServer::start(db).await;
    let monitor = server.token(Role::Monitor).await;
    let response = server
        .request(Method::GET, "/api/v1/events/stream", Some(&monitor))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_content_type(&response, "text/event-stream");
    let mut body = response.bytes_stream();

    let id = server.login("10.3.0.1", "live-1").await.agent_id;
    assert_eq!(server.logout(id).await, StatusCode::NO_CONTENT);

    let mut seen = Vec::new();
    let mut buffer = String::new();
    while seen.len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("the stream sends the changes")
            .expect("the stream stays open")
            .unwrap();
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                let change: Change = serde_json::from_str(data).unwrap();
                assert!(
                    frame.starts_with(&format!("event: {}", change.event)),
                    "{frame}"
                );
                seen.push(change);
            }
        }
    }
    assert_eq!(seen[0].event, EventKind::Registered);
    assert_eq!(seen[0].agent.as_ref().unwrap().hostname, "live-1");
    assert_eq!(seen[1].event, EventKind::Logout);
    assert_eq!(seen[1].agent.as_ref().unwrap().status, AgentStatus::Stopped);
    // Shutdown ends open streams instead of waiting for them.
    server.finish().await;
}

/// The summary as a scan of every agent would count it.
fn counted(agents: &[Agent]) -> Summary {
    let mut summary = Summary::default();
    for agent in agents {
        summary.registered += 1;
        match agent.status {
            AgentStatus::Running => summary.running += 1,
            AgentStatus::Stopped => summary.stopped += 1,
            AgentStatus::Unknown => summary.unknown += 1,
        }
        if agent.enabled {
            summary.enabled += 1;
        } else {
            summary.disabled += 1;
        }
        *summary.by_kind.entry(agent.kind.clone()).or_default() += 1;
        *summary.by_os.entry(agent.os.clone()).or_default() += 1;
        if let Some(group) = &agent.group {
            *summary.by_group.entry(group.clone()).or_default() += 1;
        }
    }
    summary
}

/// The counts the summary is read from stay equal to a scan through every kind of change:
/// logins with new details, logouts, silence, ON/OFF, groups, manual registrations, deletes,
/// prunes, bulk imports, and (on PostgreSQL) the folding of their deltas.
pub async fn summary_counts_stay_right_through_every_change(db: Db) {
    use plura_proto::{PatchAgent, RegisterAgent, Timestamp};
    use plura_server::store::{AgentStore, Imported, ListFilter, ListStore};

    let server = TestServer::start(db).await;
    let store = server.store();
    let check = |when: &'static str| async move {
        let agents = store.list(&ListFilter::default()).await.unwrap().agents;
        assert_eq!(store.summary().await.unwrap(), counted(&agents), "{when}");
    };
    let mut ids = Vec::new();
    for n in 0..40 {
        let mut body = login(&format!("10.3.0.{n}"), &format!("count-{n}"));
        body.kind = ["waf", "siem", "edr"][n % 3].into();
        body.os = ["Ubuntu", "Rocky"][n % 2].into();
        ids.push(server.login_with(&body).await.agent_id);
    }
    check("after logins").await;
    for (n, id) in ids.iter().enumerate().take(20) {
        let patch = PatchAgent {
            enabled: Some(n % 2 == 0),
            group: Some((n % 3 != 0).then(|| format!("g{}", n % 4))),
        };
        store
            .patch(*id, &patch, "test", Timestamp::now())
            .await
            .unwrap();
    }
    for id in &ids[20..30] {
        server.logout(*id).await;
    }
    // Logins with new details: another kind and OS for the same identities.
    for n in 30..35 {
        let mut body = login(&format!("10.3.0.{n}"), &format!("count-{n}"));
        body.kind = "edr".into();
        body.os = "Debian".into();
        server.login_with(&body).await;
    }
    check("after patches, logouts and new details").await;
    let manual = RegisterAgent {
        ip: "10.3.1.1".into(),
        hostname: "by-hand".into(),
        group: Some("g9".into()),
        kind: "siem".into(),
        os: "Windows".into(),
    };
    store
        .register(&manual, "test", Timestamp::now())
        .await
        .unwrap();
    for id in &ids[..5] {
        store.delete(*id, "test", Timestamp::now()).await.unwrap();
    }
    let later = Timestamp::from_millis(Timestamp::now().as_millis() + 3_600_000);
    store.stop_silent(later, later, None).await.unwrap();
    check("after registering, deleting and stopping the silent").await;
    store
        .prune_stopped(Timestamp::from_millis(later.as_millis() + 1), later)
        .await
        .unwrap();
    let imported = store
        .list(&ListFilter {
            limit: Some(3),
            ..ListFilter::default()
        })
        .await
        .unwrap()
        .agents;
    let copies: Vec<Imported> = imported
        .into_iter()
        .map(|a| Imported {
            agent: Agent {
                hostname: format!("{}-copy", a.hostname),
                ..a
            },
            key_hash: None,
        })
        .collect();
    store.import(&copies).await.unwrap();
    check("after pruning and importing").await;
    // Enough changes for the deltas a shared database keeps to be folded.
    for n in 0..600 {
        let switch = PatchAgent {
            enabled: Some(n % 2 == 0),
            group: None,
        };
        store
            .patch(ids[6], &switch, "t", Timestamp::now())
            .await
            .unwrap();
    }
    store.fold_counts().await.unwrap();
    check("after folding").await;
    server.finish().await;
}
