use super::*;

#[test]
fn a_group_set_is_sorted_deduplicated_and_compared_ignoring_case() {
    let set = GroupSet::new(vec![
        "B0000000-0000-0000-0000-000000000002".into(),
        "a0000000-0000-0000-0000-000000000001".into(),
        "b0000000-0000-0000-0000-000000000002".into(),
    ]);
    assert_eq!(set.len(), 2);
    assert_eq!(
        set.iter().collect::<Vec<_>>(),
        [
            "a0000000-0000-0000-0000-000000000001",
            "b0000000-0000-0000-0000-000000000002"
        ]
    );
    assert!(set.contains("A0000000-0000-0000-0000-000000000001"));
    assert!(set.contains("b0000000-0000-0000-0000-000000000002"));
    assert!(!set.contains("c0000000-0000-0000-0000-000000000003"));
    assert_eq!(set.bytes(), 2 * (36 + size_of::<Box<str>>()));
}

#[test]
fn only_guid_characters_make_an_object_id() {
    assert!(is_object_id("6e0a9e00-0000-4000-8000-000000000500"));
    for bad in ["", "../me", "a/b", "x?y", "a%2Fb", &"a".repeat(65)] {
        assert!(!is_object_id(bad), "{bad}");
    }
}

#[test]
fn the_first_page_is_built_from_the_endpoint_and_the_oid() {
    let metrics = Arc::new(Metrics::new());
    let credential_config = crate::config::Credential {
        name: "graph".into(),
        kind: crate::config::CredentialKind::ManagedIdentity(
            crate::config::ManagedIdentitySettings {
                user_assigned: None,
                endpoint: None,
            },
        ),
        ca_file: None,
    };
    for base in ["https://graph.microsoft.com", "http://127.0.0.1:9/base"] {
        let settings = GraphSettings {
            credential: "graph".into(),
            endpoint: Url::parse(base).unwrap(),
        };
        let credential: Arc<dyn Credential> = Arc::new(NoToken);
        let groups = GraphGroups::new(
            "entra",
            settings,
            credential_config.clone(),
            credential,
            reqwest::Client::new(),
            Limits::default(),
            metrics.clone(),
        );
        assert_eq!(
            groups.first_page("o-1").as_str(),
            format!(
                "{base}/v1.0/users/o-1/transitiveMemberOf/microsoft.graph.group?$select=id&$top=999"
            )
        );
        assert_eq!(groups.scope, format!("{base}/.default"));
        groups.show_series();
    }
    let text = metrics.encode();
    assert!(text.contains(r#"tollgate_graph_requests_total{issuer="entra",result="throttled"} 0"#));
    assert!(text.contains(r#"tollgate_groups_cache_entries{issuer="entra"} 0"#));
}

#[test]
fn every_reason_is_a_code() {
    for (e, code) in [
        (Unavailable::NoObjectId, "no_oid"),
        (Unavailable::Status(403), "graph_status_403"),
        (Unavailable::Throttled, "graph_throttled"),
        (Unavailable::NextLinkOffOrigin, "next_link_off_origin"),
    ] {
        assert_eq!(e.reason(), code);
    }
}

struct NoToken;

impl Credential for NoToken {
    fn fetch<'a>(
        &'a self,
        _scope: &'a str,
    ) -> crate::credential::BoxFuture<'a, Result<AccessToken, crate::credential::CredentialError>>
    {
        Box::pin(async { Err(crate::credential::CredentialError::Setup("none".into())) })
    }

    fn describe(&self) -> String {
        "none".into()
    }
}

#[tokio::test(start_paused = true)]
async fn groups_are_kept_five_minutes_and_failures_five_seconds() {
    let filled = |outcome| {
        let slot = Slot {
            created: Instant::now(),
            cell: tokio::sync::OnceCell::new(),
        };
        slot.cell.set(outcome).unwrap();
        slot
    };
    let ok = filled(Ok(Arc::new(GroupSet::new(vec!["g".into()]))));
    let failed = filled(Err(Unavailable::Unreachable));
    let pending = Slot {
        created: Instant::now(),
        cell: tokio::sync::OnceCell::new(),
    };
    tokio::time::advance(Duration::from_secs(4)).await;
    assert!(ok.fresh(Instant::now()) && failed.fresh(Instant::now()));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(
        !failed.fresh(Instant::now()),
        "a failure is retried after 5 s"
    );
    tokio::time::advance(Duration::from_secs(293)).await;
    assert!(ok.fresh(Instant::now()));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(
        !ok.fresh(Instant::now()),
        "groups are asked for again after 5 minutes"
    );
    assert!(
        pending.fresh(Instant::now()),
        "a lookup under way is waited for"
    );
    assert_eq!(ok.bytes(), ENTRY_OVERHEAD + 1 + size_of::<Box<str>>());
}
