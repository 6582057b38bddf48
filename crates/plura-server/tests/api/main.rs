//! The server's behaviour over HTTP, as agents and operators see it, on SQLite and PostgreSQL:
//! every scenario runs once on each, against a real server on a random port.

mod access;
mod cloud;
mod credentials;
mod lifecycle;
mod operators;
mod ops;
mod registrations;

use std::time::Duration;

use access::*;
use cloud::*;
use credentials::*;
use lifecycle::*;
use operators::*;
use ops::*;
use registrations::*;

/// How long a test waits for something the liveness timer does (3 s silence limit, and ticks).
const STOP_WITHIN: Duration = Duration::from_secs(15);

plura_testkit::on_both_backends!(
    each_agent_acts_only_on_itself_with_its_own_key,
    first_login_registers_and_relogin_finds_the_same_entry,
    new_machine_id_on_a_known_identity_is_a_takeover,
    silent_agent_turns_stopped_and_comes_back_on_heartbeat,
    agents_heard_every_interval_stay_running_with_half_the_writes,
    logout_stops_at_once_without_deleting,
    restart_keeps_every_agent_and_its_last_seen,
    roles_are_enforced_on_every_route,
    bad_input_gets_a_clear_4xx,
    list_filters_searches_sorts_and_pages,
    a_search_counts_up_to_its_limit_and_pages_on,
    csv_holds_the_filtered_rows,
    cloud_labels_are_kept_filtered_and_exported,
    summary_counts_the_fleet,
    the_fleet_over_time_is_sampled,
    summary_counts_stay_right_through_every_change,
    patch_switches_and_groups_with_history,
    delete_keeps_an_audit_record_and_the_agent_can_return,
    manual_registration_is_unknown_until_login,
    concurrent_first_logins_of_one_identity_make_one_entry,
    live_stream_tells_changes,
    ops_routes_answer,
    prune_policy_deletes_long_stopped_agents_with_an_audit_record,
    servers_sharing_a_database_agree,
    console_is_served_from_the_binary_with_a_strict_policy,
    users_sign_in_with_a_password_and_sign_out,
    old_history_is_deleted_but_the_agent_stays,
    hostnames_compare_as_dns_does,
    tokens_are_listed_revoked_and_expire,
    users_are_disabled_enabled_deleted_and_their_sign_ins_end,
    people_of_the_identity_provider_are_users_apart,
    registrations_past_the_bound_are_refused_alerted_once_and_counted,
    verdicts_decide_the_held_stop_alerts_and_a_return_clears_them,
    scale_in_is_alerted_as_information_when_asked,
    young_instances_are_in_their_grace,
    cloud_reports_are_checked_and_bounded,
);

/// PostgreSQL's alone: several servers share one database.
#[tokio::test]
async fn a_watch_may_report_to_any_server_postgres() {
    cloud::a_watch_may_report_to_any_server().await;
}

/// PostgreSQL's alone: SQLite's planner needs no statistics to use an index.
#[tokio::test]
async fn a_fleet_registering_at_once_is_analysed_again_postgres() {
    ops::a_fleet_registering_at_once_is_analysed_again().await;
}
