//! The emulated cloud the pool's tests run in: moto's EC2 server (with the fidelity fixes of
//! scripts/emulators/moto_server.py) on a random loopback port, a VPC with a subnet in each of two
//! zones, simulated instances each with an IMDSv2 fixture, and plura-eni run as at boot.

use std::time::Duration;

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use aws_sdk_ec2::types::Filter;
use futures::future::join_all;
use serde_json::Value;
use tokio::process::Command;

use plura_testkit::imds::{Imds, Instance};
use plura_testkit::process::Process;

pub const REGION: &str = "ap-northeast-2";
pub const ZONE_A: &str = "ap-northeast-2a";
pub const ZONE_C: &str = "ap-northeast-2c";
pub const BIN: &str = env!("CARGO_BIN_EXE_plura-eni");
pub const EMPTY_POOL_EXIT: i32 = 3;

/// A moto server of this test's own, with a VPC and one subnet in each of two zones, as in the
/// seed (172.31.64.0/20 in zone a, 172.31.80.0/20 in zone c).
pub struct Cloud {
    moto: Process,
    pub endpoint: String,
    /// How the tests' own SDK clients reach the emulator.
    pub sdk: aws_config::SdkConfig,
    pub ec2: aws_sdk_ec2::Client,
    pub subnet_a: String,
    pub subnet_c: String,
    pub image: String,
}

/// One simulated EC2 instance with its own metadata service.
pub struct Vm {
    pub id: String,
    pub imds: Imds,
}

impl Vm {
    pub async fn start(id: String, zone: &str) -> Self {
        let imds = Imds::start(Instance {
            availability_zone: zone.into(),
            region: REGION.into(),
            ..Instance::in_seoul(&id)
        })
        .await;
        Self { id, imds }
    }
}

/// What one run of plura-eni did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        let line = self.stdout.lines().last().expect("a JSON line");
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

pub fn moto_python() -> String {
    std::env::var("PLURA_MOTO_PYTHON").unwrap_or_else(|_| {
        let cache = std::env::var("XDG_CACHE_HOME")
            .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap()));
        format!("{cache}/plura-fleet/venv/bin/python")
    })
}

impl Cloud {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// `detach_delay`: how long a terminated instance keeps its interfaces, as on EC2.
    pub async fn start_with(detach_delay: Option<Duration>) -> Self {
        let python = moto_python();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/emulators/moto_server.py"
        );
        let mut command = Command::new(&python);
        command.arg(script);
        if let Some(delay) = detach_delay {
            command.env("PLURA_MOTO_DETACH_DELAY_S", delay.as_secs_f64().to_string());
        }
        let moto = Process::spawn(command);
        let port = moto
            .wait_for_output(
                "moto prints its port (run ./scripts/test, which installs it)",
                |_| true,
            )
            .await;
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
            moto,
            endpoint,
            sdk,
            ec2,
            subnet_a,
            subnet_c,
            image,
        }
    }

    /// How many attaches the emulator refused because the interface was in use: the races
    /// that claims lost.
    pub fn refused_attaches(&self) -> usize {
        let refused = |l: &String| l.starts_with("refused ") && l.ends_with(": in use");
        self.moto.stdout().iter().filter(|l| refused(l)).count()
    }

    /// Runs plura-eni as an operator (no instance) or on `vm`.
    pub async fn eni(&self, args: &[&str], vm: Option<&Vm>) -> Run {
        self.run_eni(args, vm, &[]).await
    }

    /// Runs plura-eni as an operator with `env` set besides the emulator's.
    pub async fn eni_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.run_eni(args, None, env).await
    }

    async fn run_eni(&self, args: &[&str], vm: Option<&Vm>, env: &[(&str, &str)]) -> Run {
        let mut command = Command::new(BIN);
        command
            .env_remove("PLURA_TOKEN")
            .env_remove("PLURA_SERVER")
            .envs(env.iter().copied());
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

    pub async fn provision(&self, subnets: &[&str], size: u32) -> Run {
        let size = size.to_string();
        let mut args = vec!["provision", "--pool", "waf", "--size", &size];
        for subnet in subnets {
            args.extend(["--subnet", subnet]);
        }
        let run = self.eni(&args, None).await;
        assert_eq!(run.code, 0, "provision: {}", run.stderr);
        run
    }

    pub async fn status(&self) -> Vec<Value> {
        let run = self.eni(&["status", "--pool", "waf", "--json"], None).await;
        assert_eq!(run.code, 0, "status: {}", run.stderr);
        serde_json::from_str::<Value>(&run.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Launches `count` instances in the zone of `subnet`, each with its metadata service.
    pub async fn launch(&self, subnet: &str, zone: &str, count: i32) -> Vec<Vm> {
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

    pub fn autoscaling(&self) -> aws_sdk_autoscaling::Client {
        aws_sdk_autoscaling::Client::new(&self.sdk)
    }

    /// An Auto Scaling group `name` of `size` instances in zone a, from a launch template of its
    /// own.
    pub async fn create_group(&self, name: &str, size: i32) {
        let template = self
            .ec2
            .create_launch_template()
            .launch_template_name(name)
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(&self.image)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let template_id = template.launch_template().unwrap().launch_template_id();
        self.autoscaling()
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .set_launch_template_id(template_id.map(str::to_string))
                    .version("$Latest")
                    .build(),
            )
            .min_size(0)
            .max_size(size)
            .desired_capacity(size)
            .vpc_zone_identifier(&self.subnet_a)
            .send()
            .await
            .unwrap();
    }

    /// The ids of group `name`'s instances, sorted.
    pub async fn group_instances(&self, name: &str) -> Vec<String> {
        let group = self
            .autoscaling()
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .unwrap();
        let mut ids: Vec<String> = group.auto_scaling_groups()[0]
            .instances()
            .iter()
            .map(|i| i.instance_id().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    pub async fn claim(&self, vm: &Vm, extra: &[&str]) -> Run {
        let args = [&["claim", "--pool", "waf", "--attach-only"][..], extra].concat();
        self.eni(&args, Some(vm)).await
    }

    /// Interfaces attached to `instance`, with their device index.
    pub async fn attached_to(&self, instance: &str) -> Vec<(String, i32)> {
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

/// Starts `vms.len()` claims at once, one process each; answers their runs in order.
pub async fn claim_all(cloud: &Cloud, vms: &[Vm], extra: &[&str]) -> Vec<Run> {
    join_all(vms.iter().map(|vm| cloud.claim(vm, extra))).await
}
