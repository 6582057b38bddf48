//! The cloud watch's reports at their bounds: a fleet of agents on EC2 gone silent, a round that
//! gives each a verdict (every one a change), rounds that change nothing, and the reads that
//! follow the watched groups' instances (the coverage, and `/metrics`, which counts it).

use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::{Value, json};

use plura_proto::{LoginRequest, Role, SilentAgent, SilentAgentList, Summary};
use plura_testkit::{Db, TestServer, fast_policy};

use crate::registry::{agent, login_each, timed_gets};
use crate::report::Timings;

/// Auto Scaling groups the instances are spread over.
const GROUPS: u32 = 10;

fn on_ec2(n: u32) -> LoginRequest {
    let mut login = agent(n);
    login.cloud.instance_id = login.machine_id.clone();
    login.cloud.zone = Some("ap-northeast-2a".into());
    login
}

pub async fn cloud(db: Db, agents: u32, instances: u32, rounds: u32) -> anyhow::Result<String> {
    // Agents stop three seconds after their login: the fleet is silent when the rounds begin.
    let target = TestServer::start_with(db, fast_policy()).await;
    let operator = target.token(Role::Operator).await;
    let http = reqwest::Client::new();
    println!("registering {agents} agents on EC2 instances, then waiting for their silence");
    let (logins, _) = login_each(&target, agents, 64, on_ec2).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let summary: Summary = target.get("/api/v1/summary").await;
        if summary.stopped == u64::from(agents) {
            break;
        }
        ensure!(Instant::now() < deadline, "the agents never all stopped");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Verdicts on what the server says is silent, as the watch asks: one in ten running.
    let silent_path = format!("/api/v1/cloud/silent?limit={}", agents.min(10_000));
    let silent: SilentAgentList = target.get(&silent_path).await;
    ensure!(
        silent.items.len() == logins.len().min(10_000),
        "every agent is silent"
    );
    let verdict = |agent: &SilentAgent, verdict: &str| json!({"agent_id": agent.agent_id, "instance_id": agent.instance_id, "verdict": verdict});
    let verdicts: Vec<Value> = silent
        .items
        .iter()
        .enumerate()
        .map(|(n, agent)| verdict(agent, if n % 10 == 0 { "running" } else { "terminated" }))
        .collect();
    // The instances of the groups: the first half are the agents' own (their agents silent), the
    // rest have none.
    let now = plura_proto::Timestamp::now().minus(Duration::from_secs(3600));
    let groups: Vec<Value> = (0..GROUPS)
        .map(|g| {
            let members: Vec<Value> = (0..instances)
                .filter(|n| n % GROUPS == g)
                .map(|n| {
                    let id = if n % 2 == 0 {
                        format!("i-{:017x}", n / 2)
                    } else {
                        format!("i-bare-{n}")
                    };
                    json!({"instance_id": id, "zone": "ap-northeast-2a", "launched_at": now})
                })
                .collect();
            json!({"asg": format!("group-{g}"), "instances": members})
        })
        .collect();
    let post = |body: Value| {
        let (http, url, operator) = (
            http.clone(),
            target.url("/api/v1/cloud/report"),
            operator.clone(),
        );
        async move {
            let sent = Instant::now();
            http.post(url)
                .bearer_auth(operator)
                .json(&body)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            anyhow::Ok(sent.elapsed())
        }
    };
    let first = post(json!({"verdicts": verdicts, "groups": groups})).await?;
    println!(
        "  first round: {} verdicts (each a change), {instances} instances: {:.1} ms",
        verdicts.len(),
        first.as_secs_f64() * 1000.0
    );
    let mut figures = format!(
        "bench=cloud db={db:?} agents={agents} instances={instances} groups={GROUPS} \
         first_report_ms={:.1}",
        first.as_secs_f64() * 1000.0
    );
    // Steady rounds: what is still silent is asked again (terminated ones are settled), and
    // nothing changes.
    let silent: SilentAgentList = target.get(&silent_path).await;
    let unsettled: Vec<Value> = silent
        .items
        .iter()
        .map(|agent| verdict(agent, "running"))
        .collect();
    println!("  {} agents left to ask each round", unsettled.len());
    let started = Instant::now();
    let mut latencies = Vec::new();
    for _ in 0..rounds {
        latencies.push(post(json!({"verdicts": unsettled, "groups": groups})).await?);
    }
    let steady = Timings::new(latencies, started.elapsed());
    println!("  {}", steady.figures("steady_report"));
    figures.push(' ');
    figures.push_str(&steady.figures("steady_report"));
    for (name, path) in [
        (
            "silent",
            format!("/api/v1/cloud/silent?limit={}", agents.min(10_000)),
        ),
        ("coverage", "/api/v1/coverage".to_string()),
        ("metrics", "/metrics".to_string()),
    ] {
        let timings = timed_gets(&http, &target.url(&path), &target.admin, rounds).await?;
        println!("  {}", timings.figures(name));
        figures.push(' ');
        figures.push_str(&timings.figures(name));
    }
    target.finish().await;
    Ok(figures)
}
