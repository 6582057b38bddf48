//! The boot around the claim: the lifecycle hook, unreachable instance metadata, and a fleet
//! churning through the pool as seen by a real server.

use std::collections::BTreeSet;

use futures::future::join_all;
use tokio::process::Command;

use crate::cloud::*;

#[tokio::test]
async fn the_lifecycle_hook_continues_a_claimed_launch_and_abandons_an_empty_pool() {
    let cloud = Cloud::start().await;
    cloud.provision(&[&cloud.subnet_a], 1).await;
    cloud.create_group("waf", 2).await;
    let asg = cloud.autoscaling();
    asg.put_lifecycle_hook()
        .auto_scaling_group_name("waf")
        .lifecycle_hook_name("plura-eni-claim")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .send()
        .await
        .unwrap();
    let ids = cloud.group_instances("waf").await;
    assert_eq!(ids.len(), 2);
    let vms = join_all(ids.into_iter().map(|id| Vm::start(id, ZONE_A))).await;

    let runs = join_all(vms.iter().map(|vm| {
        cloud.claim(
            vm,
            &["--lifecycle-hook", "plura-eni-claim", "--patience", "3s"],
        )
    }))
    .await;
    let codes: BTreeSet<i32> = runs.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        BTreeSet::from([0, EMPTY_POOL_EXIT]),
        "one of two gets the only interface"
    );
    for (vm, run) in vms.iter().zip(&runs) {
        assert!(
            !run.stderr.contains("lifecycle action:"),
            "the hook is completed: {}",
            run.stderr
        );
        let states = asg
            .describe_auto_scaling_instances()
            .instance_ids(&vm.id)
            .send()
            .await
            .unwrap();
        let state = states.auto_scaling_instances()[0]
            .lifecycle_state()
            .unwrap()
            .to_string();
        let expected = if run.code == 0 {
            "InService"
        } else {
            "Terminating"
        };
        assert_eq!(state, expected, "{}: {}", vm.id, run.stderr);
    }
}

#[tokio::test]
async fn unreachable_instance_metadata_is_a_clear_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let output = Command::new(BIN)
        .args(["claim", "--pool", "waf", "--attach-only"])
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("plura-eni: instance metadata (IMDSv2): /latest/meta-data/instance-id:"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

/// Logs an agent in as `ip` / `hostname` from `instance`, as plura-agent does after the claim.
async fn agent_login(server: &plura_testkit::TestServer, ip: &str, hostname: &str, instance: &str) {
    let mut body = plura_testkit::login(ip, hostname);
    body.machine_id = Some(instance.to_string());
    let response = server.login_as(&body).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn churn_keeps_the_agent_list_bounded_by_the_pool() {
    const POOL: usize = 4;
    const ROUNDS: usize = 3;
    let cloud = Cloud::start().await;
    cloud.provision(&[&cloud.subnet_a], POOL as u32).await;
    let pooled = plura_testkit::TestServer::start(plura_testkit::Db::Sqlite).await;
    let unpooled = plura_testkit::TestServer::start(plura_testkit::Db::Sqlite).await;

    // The group is scaled out to 4 and back in to 0, three times over.
    for _ in 0..ROUNDS {
        let vms = cloud.launch(&cloud.subnet_a, ZONE_A, POOL as i32).await;
        for (vm, run) in vms.iter().zip(claim_all(&cloud, &vms, &[]).await) {
            let claimed = run.json();
            let (ip, hostname) = (
                claimed["ip"].as_str().unwrap(),
                claimed["hostname"].as_str().unwrap(),
            );
            agent_login(&pooled, ip, hostname, &vm.id).await;

            // Without the pool the agent logs in with the instance's own fresh address.
            let described = cloud
                .ec2
                .describe_instances()
                .instance_ids(&vm.id)
                .send()
                .await
                .unwrap();
            let instance = &described.reservations()[0].instances()[0];
            let fresh_ip = instance.private_ip_address().unwrap();
            agent_login(
                &unpooled,
                fresh_ip,
                &format!("ip-{}", fresh_ip.replace('.', "-")),
                &vm.id,
            )
            .await;
        }
        let ids: Vec<String> = vms.iter().map(|vm| vm.id.clone()).collect();
        cloud
            .ec2
            .terminate_instances()
            .set_instance_ids(Some(ids))
            .send()
            .await
            .unwrap();
    }

    let with_pool = pooled.agents("").await.total;
    let without = unpooled.agents("").await.total;
    eprintln!(
        "{} instances over {ROUNDS} scale-outs: {with_pool} agents with a pool of {POOL}, \
         {without} without",
        POOL * ROUNDS
    );
    assert_eq!(with_pool, POOL as u64, "the list stays at the pool's size");
    assert_eq!(
        without,
        (POOL * ROUNDS) as u64,
        "without the pool every instance is a new agent"
    );
    // Each pooled identity was taken over by a new instance every round, and the history says so.
    for agent in pooled.agents("").await.items {
        let takeovers = pooled
            .events(agent.id)
            .await
            .iter()
            .filter(|e| e.event == plura_proto::EventKind::Takeover)
            .count();
        assert_eq!(takeovers, ROUNDS - 1, "{}", agent.hostname);
    }
    pooled.finish().await;
    unpooled.finish().await;
}
