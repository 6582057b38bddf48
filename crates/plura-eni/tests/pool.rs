//! plura-eni against a real EC2 emulator: moto's server (with the fidelity fixes of
//! scripts/emulators/moto_server.py) on a random loopback port, one per test, and an IMDSv2
//! fixture per simulated instance. The binary runs as at boot, one process per instance.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use aws_sdk_ec2::types::Filter;
use futures::future::join_all;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use plura_testkit::imds::{Imds, Instance};

const REGION: &str = "ap-northeast-2";
const ZONE_A: &str = "ap-northeast-2a";
const ZONE_C: &str = "ap-northeast-2c";
const BIN: &str = env!("CARGO_BIN_EXE_plura-eni");
const EMPTY_POOL_EXIT: i32 = 3;

/// A moto server of this test's own, with a VPC and one subnet in each of two zones, as in the
/// seed (172.31.64.0/20 in zone a, 172.31.80.0/20 in zone c).
struct Cloud {
    _moto: Child,
    endpoint: String,
    /// How the tests' own SDK clients reach the emulator.
    sdk: aws_config::SdkConfig,
    ec2: aws_sdk_ec2::Client,
    subnet_a: String,
    subnet_c: String,
    image: String,
}

/// One simulated EC2 instance with its own metadata service.
struct Vm {
    id: String,
    imds: Imds,
}

impl Vm {
    async fn start(id: String, zone: &str) -> Self {
        let imds = Imds::start(Instance {
            instance_id: id.clone(),
            availability_zone: zone.into(),
            region: REGION.into(),
        })
        .await;
        Self { id, imds }
    }
}

/// What one run of plura-eni did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        let line = self.stdout.lines().last().expect("a JSON line");
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

fn moto_python() -> String {
    std::env::var("PLURA_MOTO_PYTHON").unwrap_or_else(|_| {
        let cache = std::env::var("XDG_CACHE_HOME")
            .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap()));
        format!("{cache}/plura-fleet/venv/bin/python")
    })
}

impl Cloud {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    /// `detach_delay`: how long a terminated instance keeps its interfaces, as on EC2.
    async fn start_with(detach_delay: Option<Duration>) -> Self {
        let python = moto_python();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/emulators/moto_server.py"
        );
        let mut command = Command::new(&python);
        command
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(delay) = detach_delay {
            command.env("PLURA_MOTO_DETACH_DELAY_S", delay.as_secs_f64().to_string());
        }
        let mut moto = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start moto with {python} ({e}); run ./scripts/test, which installs it")
        });
        let mut lines = BufReader::new(moto.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("moto starts")
            .unwrap()
            .expect("moto prints its port");
        let endpoint = format!("http://127.0.0.1:{}", port.trim());
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&endpoint)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "testing", "testing", None, None, "test",
            )))
            .build();
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let vpc = ec2
            .create_vpc()
            .cidr_block("172.31.0.0/16")
            .send()
            .await
            .unwrap();
        let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
        let subnet = |cidr: &'static str, zone: &'static str| {
            let (ec2, vpc) = (ec2.clone(), vpc.clone());
            async move {
                let created = ec2
                    .create_subnet()
                    .vpc_id(vpc)
                    .cidr_block(cidr)
                    .availability_zone(zone)
                    .send()
                    .await
                    .unwrap();
                created.subnet().unwrap().subnet_id().unwrap().to_string()
            }
        };
        let subnet_a = subnet("172.31.64.0/20", ZONE_A).await;
        let subnet_c = subnet("172.31.80.0/20", ZONE_C).await;
        let images = ec2.describe_images().send().await.unwrap();
        let image = images.images()[0].image_id().unwrap().to_string();
        Self {
            _moto: moto,
            endpoint,
            sdk,
            ec2,
            subnet_a,
            subnet_c,
            image,
        }
    }

    /// Runs plura-eni as an operator (no instance) or on `vm`.
    async fn eni(&self, args: &[&str], vm: Option<&Vm>) -> Run {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .env("PLURA_LOG", "info");
        match vm {
            Some(vm) => command.env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &vm.imds.endpoint),
            None => command.env("AWS_EC2_METADATA_DISABLED", "true"),
        };
        let output = command.output().await.unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn provision(&self, subnets: &[&str], size: u32) -> Run {
        let size = size.to_string();
        let mut args = vec!["provision", "--pool", "waf", "--size", &size];
        for subnet in subnets {
            args.extend(["--subnet", subnet]);
        }
        let run = self.eni(&args, None).await;
        assert_eq!(run.code, 0, "provision: {}", run.stderr);
        run
    }

    async fn status(&self) -> Vec<Value> {
        let run = self.eni(&["status", "--pool", "waf", "--json"], None).await;
        assert_eq!(run.code, 0, "status: {}", run.stderr);
        serde_json::from_str::<Value>(&run.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Launches `count` instances in the zone of `subnet`, each with its metadata service.
    async fn launch(&self, subnet: &str, zone: &str, count: i32) -> Vec<Vm> {
        let launched = self
            .ec2
            .run_instances()
            .image_id(&self.image)
            .min_count(count)
            .max_count(count)
            .subnet_id(subnet)
            .send()
            .await
            .unwrap();
        let ids: Vec<String> = launched
            .instances()
            .iter()
            .map(|i| i.instance_id().unwrap().to_string())
            .collect();
        join_all(ids.into_iter().map(|id| Vm::start(id, zone))).await
    }

    async fn claim(&self, vm: &Vm, extra: &[&str]) -> Run {
        let args = [&["claim", "--pool", "waf", "--attach-only"][..], extra].concat();
        self.eni(&args, Some(vm)).await
    }

    /// Interfaces attached to `instance`, with their device index.
    async fn attached_to(&self, instance: &str) -> Vec<(String, i32)> {
        let described = self
            .ec2
            .describe_network_interfaces()
            .filters(
                Filter::builder()
                    .name("attachment.instance-id")
                    .values(instance)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        described
            .network_interfaces()
            .iter()
            .map(|n| {
                let index = n.attachment().and_then(|a| a.device_index()).unwrap_or(-1);
                (n.network_interface_id().unwrap().to_string(), index)
            })
            .collect()
    }
}

#[tokio::test]
async fn provision_is_idempotent_and_status_is_right() {
    let cloud = Cloud::start().await;
    let first = cloud
        .provision(&[&cloud.subnet_a, &cloud.subnet_c], 2)
        .await;
    assert_eq!(
        first.stdout.matches("created").count(),
        4,
        "{}",
        first.stdout
    );

    let again = cloud
        .provision(&[&cloud.subnet_a, &cloud.subnet_c], 2)
        .await;
    assert_eq!(
        again.stdout.matches("created").count(),
        0,
        "{}",
        again.stdout
    );
    assert_eq!(again.stdout.matches("kept").count(), 4, "{}", again.stdout);

    let members = cloud.status().await;
    assert_eq!(members.len(), 4);
    let in_zone = |zone: &str| -> BTreeSet<String> {
        members
            .iter()
            .filter(|m| m["zone"] == zone)
            .map(|m| m["hostname"].as_str().unwrap().to_string())
            .collect()
    };
    // Hostnames alternate zones, as in the seed's table.
    assert_eq!(
        in_zone(ZONE_A),
        BTreeSet::from(["waf-1".into(), "waf-3".into()])
    );
    assert_eq!(
        in_zone(ZONE_C),
        BTreeSet::from(["waf-2".into(), "waf-4".into()])
    );
    for m in &members {
        assert_eq!(m["status"], "available");
        assert_eq!(m["instance"], Value::Null);
        let ip = m["ip"].as_str().unwrap();
        let prefix = if m["zone"] == ZONE_A {
            "172.31.6"
        } else {
            "172.31.8"
        };
        assert!(
            ip.starts_with(prefix) || ip.starts_with("172.31.7") || ip.starts_with("172.31.9"),
            "{ip}"
        );
    }

    // Topping up adds only what is missing.
    let more = cloud
        .provision(&[&cloud.subnet_a, &cloud.subnet_c], 3)
        .await;
    assert_eq!(more.stdout.matches("created").count(), 2, "{}", more.stdout);
    assert_eq!(cloud.status().await.len(), 6);

    let table = cloud.eni(&["status", "--pool", "waf"], None).await;
    assert!(
        table
            .stdout
            .contains("ap-northeast-2a: 3 available, 0 in use"),
        "{}",
        table.stdout
    );
}

#[tokio::test]
async fn provision_adopts_the_seeds_hand_made_interfaces() {
    let cloud = Cloud::start().await;
    let made = cloud
        .ec2
        .create_network_interface()
        .subnet_id(&cloud.subnet_a)
        .description("plura-waf")
        .send()
        .await
        .unwrap();
    let hand_made = made
        .network_interface()
        .unwrap()
        .network_interface_id()
        .unwrap()
        .to_string();
    let run = cloud.provision(&[&cloud.subnet_a], 2).await;
    assert!(
        run.stdout.contains(&format!("adopted  {hand_made}")),
        "{}",
        run.stdout
    );
    assert_eq!(run.stdout.matches("created").count(), 1, "{}", run.stdout);
    let members = cloud.status().await;
    assert_eq!(members.len(), 2);
    assert!(
        members
            .iter()
            .any(|m| m["eni"] == hand_made.as_str() && m["hostname"] == "waf-1")
    );
}

#[tokio::test]
async fn one_claim_attaches_at_device_index_1_and_returns_the_tagged_hostname() {
    let cloud = Cloud::start().await;
    cloud
        .provision(&[&cloud.subnet_a, &cloud.subnet_c], 2)
        .await;
    let vm = cloud.launch(&cloud.subnet_c, ZONE_C, 1).await.remove(0);

    let claimed = cloud.claim(&vm, &[]).await.json();
    let hostname = claimed["hostname"].as_str().unwrap();
    assert!(
        ["waf-2", "waf-4"].contains(&hostname),
        "a zone-c interface: {claimed}"
    );
    assert_eq!(claimed["zone"], ZONE_C);
    assert_eq!(claimed["attached_now"], true);
    let eni = claimed["eni"].as_str().unwrap().to_string();
    assert!(cloud.attached_to(&vm.id).await.contains(&(eni.clone(), 1)));

    // A second run (a reboot) keeps what the instance holds.
    let again = cloud.claim(&vm, &[]).await.json();
    assert_eq!(
        (again["eni"].as_str().unwrap(), &again["attached_now"]),
        (eni.as_str(), &Value::Bool(false))
    );
    let members = cloud.status().await;
    let held: Vec<&Value> = members
        .iter()
        .filter(|m| m["instance"] == vm.id.as_str())
        .collect();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["status"], "in-use");

    // Release detaches it for a clean scale-in.
    let released = cloud
        .eni(&["release", "--pool", "waf"], Some(&vm))
        .await
        .json();
    assert_eq!(released["released"], eni.as_str());
    assert!(
        cloud
            .attached_to(&vm.id)
            .await
            .iter()
            .all(|(e, _)| *e != eni)
    );
}

/// Starts `vms.len()` claims at once, one process each; answers their runs in order.
async fn claim_all(cloud: &Cloud, vms: &[Vm], extra: &[&str]) -> Vec<Run> {
    join_all(vms.iter().map(|vm| cloud.claim(vm, extra))).await
}

fn distinct_enis(runs: &[Run]) -> BTreeSet<String> {
    runs.iter()
        .filter(|r| r.code == 0)
        .map(|r| r.json()["eni"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn thirty_two_instances_booting_at_once_get_thirty_two_interfaces() {
    let cloud = Cloud::start().await;
    cloud.provision(&[&cloud.subnet_a], 32).await;
    let vms = cloud.launch(&cloud.subnet_a, ZONE_A, 32).await;

    let runs = claim_all(&cloud, &vms, &[]).await;
    for run in &runs {
        assert_eq!(run.code, 0, "every instance gets one: {}", run.stderr);
    }
    assert_eq!(distinct_enis(&runs).len(), 32, "no interface given twice");
    let races: usize = runs
        .iter()
        .map(|r| r.stderr.matches("taken by another instance").count())
        .sum();
    eprintln!("plura-eni claim, 32 at once from 32: 32 succeeded, {races} lost races retried");
    for vm in &vms {
        let attached = cloud.attached_to(&vm.id).await;
        assert!(
            attached.iter().any(|(_, index)| *index == 1),
            "{}: {attached:?}",
            vm.id
        );
    }
}

#[tokio::test]
async fn a_pool_of_30_leaves_exactly_2_of_32_with_the_empty_pool_error() {
    let cloud = Cloud::start().await;
    cloud.provision(&[&cloud.subnet_a], 30).await;
    let vms = cloud.launch(&cloud.subnet_a, ZONE_A, 32).await;

    let runs = claim_all(&cloud, &vms, &["--patience", "10s"]).await;
    let empty: Vec<&Run> = runs.iter().filter(|r| r.code == EMPTY_POOL_EXIT).collect();
    assert_eq!(
        empty.len(),
        2,
        "exactly the two extra instances are refused"
    );
    assert_eq!(runs.iter().filter(|r| r.code == 0).count(), 30);
    assert_eq!(distinct_enis(&runs).len(), 30);
    for run in empty {
        let last = run.stderr.lines().last().unwrap();
        assert_eq!(
            last,
            "plura-eni: pool \"waf\" has no available interface in ap-northeast-2a: 30 of 30 in \
             use (raise the pool size or lower the group's maximum)"
        );
        assert!(run.stdout.is_empty(), "no identity is printed");
    }

    // A zone without a pool is as clear.
    let vm = cloud.launch(&cloud.subnet_c, ZONE_C, 1).await.remove(0);
    let run = cloud.claim(&vm, &[]).await;
    assert_eq!(run.code, EMPTY_POOL_EXIT);
    assert!(
        run.stderr
            .contains("in ap-northeast-2c: 0 of 0 in use (provision it"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_terminated_instances_interface_goes_to_the_next_one_with_the_same_ip_and_hostname() {
    // EC2 releases a terminated instance's interfaces a little later; so does this emulator.
    let cloud = Cloud::start_with(Some(Duration::from_secs(3))).await;
    cloud.provision(&[&cloud.subnet_a], 1).await;
    let old = cloud.launch(&cloud.subnet_a, ZONE_A, 1).await.remove(0);
    let before = cloud.claim(&old, &[]).await.json();

    cloud
        .ec2
        .terminate_instances()
        .instance_ids(&old.id)
        .send()
        .await
        .unwrap();
    let new = cloud.launch(&cloud.subnet_a, ZONE_A, 1).await.remove(0);
    let run = cloud.claim(&new, &[]).await;
    let after = run.json();
    assert!(
        run.stderr.contains("held by terminating instances"),
        "it waited: {}",
        run.stderr
    );
    assert_eq!(after["eni"], before["eni"]);
    assert_eq!(after["ip"], before["ip"], "the same fixed IP");
    assert_eq!(
        after["hostname"], before["hostname"],
        "the same hostname: the same agent"
    );
    assert!(
        cloud
            .attached_to(&new.id)
            .await
            .iter()
            .any(|(_, index)| *index == 1)
    );
}

/// The seed's user-data script, step by step: the first available interface with the
/// description in the zone, attached at index 1, no retry.
async fn seed_claim(
    ec2: &aws_sdk_ec2::Client,
    instance: &str,
    barrier: Option<&tokio::sync::Barrier>,
) -> bool {
    let described = ec2
        .describe_network_interfaces()
        .filters(
            Filter::builder()
                .name("description")
                .values("plura-waf")
                .build(),
        )
        .filters(
            Filter::builder()
                .name("availability-zone")
                .values(ZONE_A)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let first = described
        .network_interfaces()
        .iter()
        .find(|n| n.status().map(|s| s.as_str()) == Some("available"))
        .and_then(|n| n.network_interface_id())
        .map(str::to_string);
    if let Some(barrier) = barrier {
        barrier.wait().await;
    }
    let Some(first) = first else {
        return false;
    };
    ec2.attach_network_interface()
        .network_interface_id(first)
        .instance_id(instance)
        .device_index(1)
        .send()
        .await
        .is_ok()
}

#[tokio::test]
async fn the_seeds_way_loses_instances_under_the_same_concurrency() {
    let cloud = Cloud::start().await;
    cloud.provision(&[&cloud.subnet_a], 32).await;

    // As the boot scripts run, all at once.
    let vms = cloud.launch(&cloud.subnet_a, ZONE_A, 32).await;
    let won = join_all(vms.iter().map(|vm| seed_claim(&cloud.ec2, &vm.id, None))).await;
    let natural = won.iter().filter(|w| **w).count();

    // And with every instance reading the pool before any attaches, as when they boot in the
    // same second: the seed's script gives the same interface to all of them.
    let vms = cloud.launch(&cloud.subnet_a, ZONE_A, 32).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let won = join_all(
        vms.iter()
            .map(|vm| seed_claim(&cloud.ec2, &vm.id, Some(&barrier))),
    )
    .await;
    let together = won.iter().filter(|w| **w).count();
    eprintln!(
        "the seed's script, 32 at once from 32: {natural} succeeded as they came, \
         {together} when all read before attaching"
    );
    assert_eq!(
        together, 1,
        "one winner, every other instance keeps a fresh address"
    );
}

#[tokio::test]
async fn the_cloudformation_template_passes_cfn_lint_and_the_policy_is_scoped_to_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let run = Command::new(BIN)
        .args(["cloudformation", "--pool", "waf", "--size", "2"])
        .args([
            "--subnet",
            "subnet-0a1b2c3d4e5f60718",
            "--subnet",
            "subnet-0c1b2c3d4e5f60718",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let template = dir.path().join("plura-eni.json");
    std::fs::write(&template, &run.stdout).unwrap();
    let cfn_lint = std::path::Path::new(&moto_python()).with_file_name("cfn-lint");
    let lint = Command::new(&cfn_lint)
        .arg(&template)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run ./scripts/test",
                cfn_lint.display()
            )
        });
    assert!(
        lint.status.success(),
        "cfn-lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let policy = Command::new(BIN)
        .args(["policy", "--pool", "waf"])
        .output()
        .await
        .unwrap();
    let policy: Value = serde_json::from_slice(&policy.stdout).unwrap();
    let attach = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Resource"] == "arn:aws:ec2:*:*:network-interface/*")
        .expect("a statement for the interfaces");
    assert_eq!(
        attach["Condition"]["StringEquals"]["aws:ResourceTag/plura:pool"],
        "waf"
    );
    for statement in policy["Statement"].as_array().unwrap() {
        let actions = match &statement["Action"] {
            Value::Array(actions) => actions.clone(),
            action => vec![action.clone()],
        };
        for action in actions {
            assert!(
                !action.as_str().unwrap().contains('*'),
                "no wildcard action: {action}"
            );
        }
    }
}

#[tokio::test]
async fn the_lifecycle_hook_continues_a_claimed_launch_and_abandons_an_empty_pool() {
    let cloud = Cloud::start().await;
    cloud.provision(&[&cloud.subnet_a], 1).await;
    let template = cloud
        .ec2
        .create_launch_template()
        .launch_template_name("waf")
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(&cloud.image)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let template_id = template
        .launch_template()
        .unwrap()
        .launch_template_id()
        .unwrap();
    let asg = aws_sdk_autoscaling::Client::new(&cloud.sdk);
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("waf")
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_id(template_id)
                .version("$Latest")
                .build(),
        )
        .min_size(0)
        .max_size(2)
        .desired_capacity(2)
        .vpc_zone_identifier(&cloud.subnet_a)
        .send()
        .await
        .unwrap();
    asg.put_lifecycle_hook()
        .auto_scaling_group_name("waf")
        .lifecycle_hook_name("plura-eni-claim")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .send()
        .await
        .unwrap();
    let group = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("waf")
        .send()
        .await
        .unwrap();
    let ids: Vec<String> = group.auto_scaling_groups()[0]
        .instances()
        .iter()
        .map(|i| i.instance_id().unwrap().to_string())
        .collect();
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
