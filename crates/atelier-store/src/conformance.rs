//! The store conformance suite: the behaviour every backend must show, written once.
//!
//! A backend runs it with [`conformance_tests!`](crate::conformance_tests), giving an
//! async factory that returns a fresh, empty, migrated store per case, and a guard
//! kept alive until the case ends (a temporary folder, a database to drop):
//!
//! ```ignore
//! atelier_store::conformance_tests!(async || { let (store, dir) = open_fresh().await; (Arc::new(store) as Arc<dyn Store>, dir) });
//! ```
//!
//! Each case panics with a message on failure, like any test.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "this is test code")]

use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use uuid::Uuid;

use crate::*;

/// Generates one `#[tokio::test]` per conformance case, each on its own fresh store.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@cases $factory;
            migrate_is_idempotent,
            user_round_trip,
            duplicate_email_is_refused,
            list_users_filters_and_pages,
            update_email,
            credentials_by_email_follow_every_change,
            set_role_moves_valid_after_and_keeps_one_admin,
            delete_user_takes_its_tokens_and_keeps_one_admin,
            change_password_revokes_other_families,
            rotation_and_reuse_detection,
            expiry_idle_and_absolute,
            concurrent_rotation_has_one_winner,
            logout_revokes_family,
            purge_keeps_what_still_matters,
            token_stats_by_state,
            audit_and_login_counts,
            secret_is_initialised_once,
            auth_states_and_role_counts,
            settings_round_trip,
            conversations_belong_to_their_user,
            media_round_trip,
            generations_are_recorded_in_batches_and_paged,
            video_jobs_are_leased_and_finished_once,
            deleting_a_user_removes_their_content,
            usage_is_summed_per_user_model_and_day,
            api_keys_are_listed_revoked_and_touched,
            budget_overrides_and_spend,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let factory = $factory;
                let (store, guard): (::std::sync::Arc<dyn $crate::Store>, _) = factory().await;
                $crate::conformance::$case(store).await;
                drop(guard);
            }
        )*
    };
}

/// Now, at the microsecond precision every backend keeps.
fn now() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(Duration::microseconds(1))
        .expect("truncating to microseconds")
}

fn new_user(email: &str, role: Role) -> NewUser {
    NewUser {
        id: Uuid::now_v7(),
        email: email.to_owned(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$fake${email}"),
        role,
        now: now(),
    }
}

fn token(n: u8) -> TokenHash {
    let mut bytes = [0u8; 32];
    bytes[0] = n;
    bytes[31] = 0xa5;
    TokenHash(bytes)
}

fn session(user_id: Uuid, hash: TokenHash, at: DateTime<Utc>) -> NewSession {
    NewSession {
        token_id: Uuid::now_v7(),
        family_id: Uuid::now_v7(),
        user_id,
        token_hash: hash,
        now: at,
        expires_at: at + Duration::days(7),
        family_expires_at: at + Duration::days(30),
    }
}

fn rotation(hash: TokenHash, at: DateTime<Utc>) -> Rotation {
    Rotation {
        token_id: Uuid::now_v7(),
        token_hash: hash,
        now: at,
        expires_at: at + Duration::days(7),
    }
}

async fn rotate(store: &Arc<dyn Store>, from: TokenHash, to: TokenHash) -> RotateOutcome {
    store
        .rotate_refresh_token(from, rotation(to, now()))
        .await
        .unwrap()
}

pub async fn migrate_is_idempotent(store: Arc<dyn Store>) {
    let again = store.migrate().await.unwrap();
    assert_eq!(
        again.applied, 0,
        "a migrated store must have nothing left to apply"
    );
    assert!(again.version >= 1);
    store.ping().await.unwrap();
}

pub async fn user_round_trip(store: Arc<dyn Store>) {
    let new = new_user("ada@example.com", Role::User);
    let created = store.create_user(new.clone()).await.unwrap();
    assert_eq!(created.id, new.id);
    assert_eq!(created.email, "ada@example.com");
    assert_eq!(created.role, Role::User);
    assert_eq!(created.created_at, new.now);

    let by_id = store.user_by_id(new.id).await.unwrap().expect("user by id");
    assert_eq!(by_id, created);
    let creds = store
        .credentials_by_email("ada@example.com")
        .await
        .unwrap()
        .expect("credentials by email");
    assert_eq!(creds.user, created);
    assert_eq!(creds.password_hash, new.password_hash);
    let creds = store
        .credentials_by_id(new.id)
        .await
        .unwrap()
        .expect("credentials by id");
    assert_eq!(creds.password_hash, new.password_hash);

    assert!(store.user_by_id(Uuid::now_v7()).await.unwrap().is_none());
    assert!(
        store
            .credentials_by_email("nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );

    store.set_password_hash(new.id, "$argon2id$new").await.unwrap();
    let creds = store.credentials_by_id(new.id).await.unwrap().unwrap();
    assert_eq!(creds.password_hash, "$argon2id$new");
    assert_eq!(
        creds.user.tokens_valid_after, created.tokens_valid_after,
        "a rehash must not end sessions"
    );
    assert!(matches!(
        store.set_password_hash(Uuid::now_v7(), "x").await,
        Err(StoreError::NotFound)
    ));
}

pub async fn duplicate_email_is_refused(store: Arc<dyn Store>) {
    store
        .create_user(new_user("dup@example.com", Role::User))
        .await
        .unwrap();
    let err = store
        .create_user(new_user("dup@example.com", Role::Admin))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::EmailTaken), "got {err:?}");
    assert_eq!(
        store
            .list_users(&UserQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .total,
        1
    );
}

pub async fn list_users_filters_and_pages(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for (email, role) in [
        ("a.one@example.com", Role::User),
        ("b.two@example.org", Role::Admin),
        ("c.three@example.com", Role::User),
        ("d.FOUR@example.com", Role::User),
        ("e.five@example.org", Role::Admin),
    ] {
        ids.push(
            store
                .create_user(new_user(&email.to_lowercase(), role))
                .await
                .unwrap()
                .id,
        );
    }

    let all = store
        .list_users(&UserQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.total, 5);
    assert!(!all.has_more);
    assert_eq!(
        all.users.iter().map(|u| u.id).collect::<Vec<_>>(),
        ids,
        "creation order"
    );

    let admins = store
        .list_users(&UserQuery {
            role: Some(Role::Admin),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(admins.total, 2);
    assert!(admins.users.iter().all(|u| u.role == Role::Admin));

    let org = store
        .list_users(&UserQuery {
            email_contains: Some("EXAMPLE.ORG".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(org.total, 2, "email filter is a case-insensitive substring");

    let wildcard = store
        .list_users(&UserQuery {
            email_contains: Some("%".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        wildcard.total, 0,
        "LIKE wildcards in the filter are matched literally"
    );

    let page1 = store
        .list_users(&UserQuery {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page1.users.len(), 2);
    assert!(page1.has_more);
    assert_eq!(page1.total, 5);
    let page2 = store
        .list_users(&UserQuery {
            limit: 2,
            after: Some(page1.users[1].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page2.users.iter().map(|u| u.id).collect::<Vec<_>>(),
        ids[2..4].to_vec()
    );
    assert!(page2.has_more);
    let page3 = store
        .list_users(&UserQuery {
            limit: 2,
            after: Some(page2.users[1].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page3.users.len(), 1);
    assert!(!page3.has_more);
}

pub async fn update_email(store: Arc<dyn Store>) {
    let a = store
        .create_user(new_user("a@example.com", Role::User))
        .await
        .unwrap();
    store
        .create_user(new_user("b@example.com", Role::User))
        .await
        .unwrap();

    let later = now() + Duration::seconds(1);
    let updated = store.update_email(a.id, "a2@example.com", later).await.unwrap();
    assert_eq!(updated.email, "a2@example.com");
    assert_eq!(updated.updated_at, later);
    assert!(
        store
            .credentials_by_email("a@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .credentials_by_email("a2@example.com")
            .await
            .unwrap()
            .is_some()
    );

    let err = store
        .update_email(a.id, "b@example.com", now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::EmailTaken), "got {err:?}");
    assert_eq!(
        store.user_by_id(a.id).await.unwrap().unwrap().email,
        "a2@example.com"
    );

    let err = store
        .update_email(Uuid::now_v7(), "c@example.com", now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "got {err:?}");
}

/// A login looks the same email up again and again; whatever a store keeps
/// between lookups, each change to the user shows at the next one.
pub async fn credentials_by_email_follow_every_change(store: Arc<dyn Store>) {
    let by_email = |email: &'static str| {
        let store = Arc::clone(&store);
        async move { store.credentials_by_email(email).await.unwrap() }
    };
    let user = store
        .create_user(new_user("c@example.com", Role::User))
        .await
        .unwrap();
    assert_eq!(by_email("c@example.com").await.unwrap().user, user);

    store
        .set_password_hash(user.id, "$argon2id$rehashed")
        .await
        .unwrap();
    let creds = by_email("c@example.com").await.unwrap();
    assert_eq!(creds.password_hash, "$argon2id$rehashed");

    let at = now() + Duration::seconds(2);
    store
        .change_password(user.id, "$argon2id$changed", None, at)
        .await
        .unwrap();
    let creds = by_email("c@example.com").await.unwrap();
    assert_eq!(creds.password_hash, "$argon2id$changed");
    assert_eq!(creds.user.tokens_valid_after, at);

    store.set_role(user.id, Role::Admin, now()).await.unwrap();
    assert_eq!(by_email("c@example.com").await.unwrap().user.role, Role::Admin);

    store
        .update_email(user.id, "c2@example.com", now())
        .await
        .unwrap();
    assert!(by_email("c@example.com").await.is_none());
    assert_eq!(by_email("c2@example.com").await.unwrap().user.id, user.id);

    // The last admin cannot go; a second one lets the first be deleted.
    store
        .create_user(new_user("root@example.com", Role::Admin))
        .await
        .unwrap();
    store.delete_user(user.id).await.unwrap();
    assert!(by_email("c2@example.com").await.is_none());
}

pub async fn set_role_moves_valid_after_and_keeps_one_admin(store: Arc<dyn Store>) {
    let admin = store
        .create_user(new_user("root@example.com", Role::Admin))
        .await
        .unwrap();
    let user = store
        .create_user(new_user("u@example.com", Role::User))
        .await
        .unwrap();

    let err = store.set_role(admin.id, Role::User, now()).await.unwrap_err();
    assert!(matches!(err, StoreError::LastAdmin), "got {err:?}");
    assert_eq!(
        store.user_by_id(admin.id).await.unwrap().unwrap().role,
        Role::Admin
    );

    let at = now() + Duration::seconds(5);
    let promoted = store.set_role(user.id, Role::Admin, at).await.unwrap();
    assert_eq!(promoted.role, Role::Admin);
    assert_eq!(
        promoted.tokens_valid_after, at,
        "a role change revokes earlier tokens"
    );

    let unchanged = store
        .set_role(user.id, Role::Admin, at + Duration::seconds(5))
        .await
        .unwrap();
    assert_eq!(
        unchanged.tokens_valid_after, at,
        "setting the same role changes nothing"
    );

    let demoted = store.set_role(admin.id, Role::User, now()).await.unwrap();
    assert_eq!(demoted.role, Role::User, "with two admins, one may be demoted");

    let err = store
        .set_role(Uuid::now_v7(), Role::Admin, now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "got {err:?}");
}

pub async fn delete_user_takes_its_tokens_and_keeps_one_admin(store: Arc<dyn Store>) {
    let admin = store
        .create_user(new_user("root@example.com", Role::Admin))
        .await
        .unwrap();
    let user = store
        .create_user(new_user("u@example.com", Role::User))
        .await
        .unwrap();
    store
        .create_session(session(user.id, token(1), now()))
        .await
        .unwrap();

    let err = store.delete_user(admin.id).await.unwrap_err();
    assert!(matches!(err, StoreError::LastAdmin), "got {err:?}");

    store.delete_user(user.id).await.unwrap();
    assert!(store.user_by_id(user.id).await.unwrap().is_none());
    assert_eq!(rotate(&store, token(1), token(2)).await, RotateOutcome::Invalid);
    assert_eq!(
        store.refresh_token_stats(now()).await.unwrap(),
        TokenStats::default()
    );

    let err = store.delete_user(user.id).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "got {err:?}");

    // An email freed by deletion can be registered again.
    store
        .create_user(new_user("u@example.com", Role::User))
        .await
        .unwrap();
}

pub async fn change_password_revokes_other_families(store: Arc<dyn Store>) {
    let user = store
        .create_user(new_user("u@example.com", Role::User))
        .await
        .unwrap();
    let kept = session(user.id, token(1), now());
    let kept_family = kept.family_id;
    store.create_session(kept).await.unwrap();
    store
        .create_session(session(user.id, token(2), now()))
        .await
        .unwrap();

    let at = now() + Duration::seconds(3);
    let changed = store
        .change_password(user.id, "$argon2id$changed", Some(kept_family), at)
        .await
        .unwrap();
    assert_eq!(changed.tokens_valid_after, at);
    let creds = store.credentials_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(creds.password_hash, "$argon2id$changed");

    assert!(matches!(
        rotate(&store, token(1), token(3)).await,
        RotateOutcome::Rotated { .. }
    ));
    assert_eq!(rotate(&store, token(2), token(4)).await, RotateOutcome::Invalid);

    store
        .change_password(user.id, "$argon2id$again", None, now())
        .await
        .unwrap();
    assert_eq!(rotate(&store, token(3), token(5)).await, RotateOutcome::Invalid);

    let err = store
        .change_password(Uuid::now_v7(), "x", None, now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "got {err:?}");
}

pub async fn rotation_and_reuse_detection(store: Arc<dyn Store>) {
    let user = store
        .create_user(new_user("u@example.com", Role::User))
        .await
        .unwrap();
    let first = session(user.id, token(1), now());
    let family = first.family_id;
    store.create_session(first).await.unwrap();

    match rotate(&store, token(1), token(2)).await {
        RotateOutcome::Rotated { user: u, family_id } => {
            assert_eq!(u.id, user.id);
            assert_eq!(family_id, family);
        }
        other => panic!("expected rotation, got {other:?}"),
    }
    assert!(matches!(
        rotate(&store, token(2), token(3)).await,
        RotateOutcome::Rotated { .. }
    ));

    // Replaying the first token kills the family, including its newest member.
    assert_eq!(
        rotate(&store, token(1), token(9)).await,
        RotateOutcome::Reused {
            user_id: user.id,
            family_id: family
        }
    );
    assert_eq!(rotate(&store, token(3), token(4)).await, RotateOutcome::Invalid);
    assert_eq!(rotate(&store, token(77), token(78)).await, RotateOutcome::Invalid);

    // Another family of the same user is untouched.
    store
        .create_session(session(user.id, token(10), now()))
        .await
        .unwrap();
    assert!(matches!(
        rotate(&store, token(10), token(11)).await,
        RotateOutcome::Rotated { .. }
    ));
}

pub async fn expiry_idle_and_absolute(store: Arc<dyn Store>) {
    let user = store
        .create_user(new_user("u@example.com", Role::User))
        .await
        .unwrap();
    let start = now() - Duration::days(10);
    let mut idle = session(user.id, token(1), start);
    idle.expires_at = start + Duration::days(7);
    store.create_session(idle).await.unwrap();
    assert_eq!(rotate(&store, token(1), token(2)).await, RotateOutcome::Expired);

    // The family's absolute lifetime caps each successor's idle lifetime.
    let start = now() - Duration::days(29);
    let mut capped = session(user.id, token(3), start);
    capped.expires_at = now() + Duration::days(1);
    capped.family_expires_at = start + Duration::days(30);
    store.create_session(capped).await.unwrap();
    let mut next = rotation(token(4), now());
    next.expires_at = now() + Duration::days(7);
    assert!(matches!(
        store.rotate_refresh_token(token(3), next).await.unwrap(),
        RotateOutcome::Rotated { .. }
    ));
    let after_family = rotation(token(5), start + Duration::days(30) + Duration::seconds(1));
    assert_eq!(
        store.rotate_refresh_token(token(4), after_family).await.unwrap(),
        RotateOutcome::Expired
    );
}

pub async fn concurrent_rotation_has_one_winner(store: Arc<dyn Store>) {
    let user = store
        .create_user(new_user("u@example.com", Role::User))
        .await
        .unwrap();
    store
        .create_session(session(user.id, token(1), now()))
        .await
        .unwrap();

    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .rotate_refresh_token(token(1), rotation(token(100 + i), now()))
                    .await
            })
        })
        .collect();
    let mut rotated = 0;
    for task in tasks {
        match task.await.unwrap().expect("concurrent rotation must not fail") {
            RotateOutcome::Rotated { .. } => rotated += 1,
            RotateOutcome::Reused { .. } | RotateOutcome::Invalid => {}
            RotateOutcome::Expired => panic!("nothing here is expired"),
        }
    }
    assert_eq!(rotated, 1, "exactly one concurrent rotation may succeed");
}

pub async fn logout_revokes_family(store: Arc<dyn Store>) {
    let user = store
        .create_user(new_user("u@example.com", Role::User))
        .await
        .unwrap();
    let s = session(user.id, token(1), now());
    let family = s.family_id;
    store.create_session(s).await.unwrap();
    assert!(matches!(
        rotate(&store, token(1), token(2)).await,
        RotateOutcome::Rotated { .. }
    ));

    let revoked = store.revoke_family(token(2), now()).await.unwrap();
    assert_eq!(
        revoked,
        Some(RevokedFamily {
            user_id: user.id,
            family_id: family
        })
    );
    assert_eq!(rotate(&store, token(2), token(3)).await, RotateOutcome::Invalid);
    assert_eq!(store.revoke_family(token(99), now()).await.unwrap(), None);
}

pub async fn purge_keeps_what_still_matters(store: Arc<dyn Store>) {
    let user = store
        .create_user(new_user("u@example.com", Role::User))
        .await
        .unwrap();
    // A live family with one rotation: the rotated token stays for reuse detection.
    let live = session(user.id, token(1), now());
    let live_family = live.family_id;
    store.create_session(live).await.unwrap();
    assert!(matches!(
        rotate(&store, token(1), token(2)).await,
        RotateOutcome::Rotated { .. }
    ));
    // A logged-out family: revoked, purgeable.
    store
        .create_session(session(user.id, token(3), now()))
        .await
        .unwrap();
    store.revoke_family(token(3), now()).await.unwrap();
    // An expired token: purgeable.
    let old = now() - Duration::days(40);
    store
        .create_session(session(user.id, token(4), old))
        .await
        .unwrap();

    assert_eq!(store.purge_refresh_tokens(now()).await.unwrap(), 2);
    assert_eq!(store.purge_refresh_tokens(now()).await.unwrap(), 0);
    assert_eq!(
        rotate(&store, token(1), token(5)).await,
        RotateOutcome::Reused {
            user_id: user.id,
            family_id: live_family
        },
        "the rotated token survived the purge, so its replay is still caught"
    );
}

pub async fn token_stats_by_state(store: Arc<dyn Store>) {
    let user = store
        .create_user(new_user("u@example.com", Role::User))
        .await
        .unwrap();
    store
        .create_session(session(user.id, token(1), now()))
        .await
        .unwrap();
    assert!(matches!(
        rotate(&store, token(1), token(2)).await,
        RotateOutcome::Rotated { .. }
    ));
    store
        .create_session(session(user.id, token(3), now()))
        .await
        .unwrap();
    store.revoke_family(token(3), now()).await.unwrap();
    store
        .create_session(session(user.id, token(4), now() - Duration::days(40)))
        .await
        .unwrap();

    let stats = store.refresh_token_stats(now()).await.unwrap();
    assert_eq!(
        stats,
        TokenStats {
            active: 1,
            expired: 1,
            revoked: 1,
            rotated: 1
        }
    );
}

pub async fn audit_and_login_counts(store: Arc<dyn Store>) {
    let user = store
        .create_user(new_user("u@example.com", Role::User))
        .await
        .unwrap();
    let record = |event: &str, at: DateTime<Utc>| AuditRecord {
        id: Uuid::now_v7(),
        at,
        event: event.to_owned(),
        user_id: Some(user.id),
        actor_id: None,
        ip: Some("127.0.0.1".into()),
        request_id: Some("req-1".into()),
        details: r#"{"k":"v"}"#.into(),
    };
    // Written in batches, as the audit service does; an empty batch is a no-op.
    store.record_audits(&[]).await.unwrap();
    store
        .record_audits(&[record("login", now()), record("login", now())])
        .await
        .unwrap();
    store
        .record_audits(&[
            record("login_failed", now()),
            record("login_failed", now() - Duration::days(2)),
            record("role_changed", now()),
        ])
        .await
        .unwrap();

    let counts = store
        .login_counts_since(now() - Duration::hours(24))
        .await
        .unwrap();
    assert_eq!(
        counts,
        LoginCounts {
            succeeded: 2,
            failed: 1
        }
    );

    // Audit records outlive the user they are about.
    store.delete_user(user.id).await.unwrap();
    let counts = store.login_counts_since(now() - Duration::days(3)).await.unwrap();
    assert_eq!(
        counts,
        LoginCounts {
            succeeded: 2,
            failed: 2
        }
    );
}

pub async fn secret_is_initialised_once(store: Arc<dyn Store>) {
    let first = store.secret_get_or_init("jwt", b"first-candidate").await.unwrap();
    assert_eq!(first, b"first-candidate");
    let second = store
        .secret_get_or_init("jwt", b"second-candidate")
        .await
        .unwrap();
    assert_eq!(second, b"first-candidate", "an existing secret is never replaced");
    let other = store.secret_get_or_init("other", b"x").await.unwrap();
    assert_eq!(other, b"x");
}

pub async fn auth_states_and_role_counts(store: Arc<dyn Store>) {
    let a = store
        .create_user(new_user("a@example.com", Role::Admin))
        .await
        .unwrap();
    let b = store
        .create_user(new_user("b@example.com", Role::User))
        .await
        .unwrap();
    let c = store
        .create_user(new_user("c@example.com", Role::User))
        .await
        .unwrap();

    let mut states = store.auth_states().await.unwrap();
    states.sort_by_key(|s| s.user_id);
    assert_eq!(
        states,
        vec![AuthState::from(&a), AuthState::from(&b), AuthState::from(&c)]
    );

    let mut counts = store.count_users_by_role().await.unwrap();
    counts.sort_by_key(|(role, _)| *role as u8);
    assert_eq!(counts, vec![(Role::User, 2), (Role::Admin, 1)]);
}

pub async fn settings_round_trip(store: Arc<dyn Store>) {
    assert_eq!(store.setting("allowed_models").await.unwrap(), None);
    store
        .set_setting("allowed_models", r#"["a"]"#, now())
        .await
        .unwrap();
    store
        .set_setting("allowed_models", r#"["a","b"]"#, now())
        .await
        .unwrap();
    assert_eq!(
        store.setting("allowed_models").await.unwrap().as_deref(),
        Some(r#"["a","b"]"#)
    );
}

fn conversation(user_id: Uuid, title: &str, at: DateTime<Utc>) -> Conversation {
    Conversation {
        id: Uuid::now_v7(),
        user_id,
        title: title.into(),
        model: None,
        created_at: at,
        updated_at: at,
    }
}

fn message(conversation_id: Uuid, role: &str, content: &str, at: DateTime<Utc>) -> ChatMessage {
    ChatMessage {
        id: Uuid::now_v7(),
        conversation_id,
        role: role.into(),
        content: content.into(),
        status: MessageStatus::Complete,
        model: (role == "assistant").then(|| "m/one".to_owned()),
        error: None,
        created_at: at,
    }
}

pub async fn conversations_belong_to_their_user(store: Arc<dyn Store>) {
    let ada = store
        .create_user(new_user("ada@example.com", Role::User))
        .await
        .unwrap();
    let bob = store
        .create_user(new_user("bob@example.com", Role::User))
        .await
        .unwrap();
    let t0 = now() - Duration::minutes(10);
    let first = conversation(ada.id, "first", t0);
    let second = conversation(ada.id, "second", t0 + Duration::minutes(1));
    store.create_conversation(&first, &[]).await.unwrap();
    let opening = message(second.id, "user", "first words", second.created_at);
    store
        .create_conversation(&second, std::slice::from_ref(&opening))
        .await
        .unwrap();
    assert_eq!(
        store.messages(second.id).await.unwrap(),
        [opening],
        "created with its first message"
    );

    let mut failed = message(first.id, "assistant", "partial ans", t0 + Duration::minutes(3));
    failed.status = MessageStatus::Failed;
    failed.error = Some("upstream failed".into());
    let msgs = vec![
        message(first.id, "user", "hello", t0 + Duration::minutes(2)),
        failed.clone(),
    ];
    store
        .add_messages(first.id, &msgs, Some("m/one"), t0 + Duration::minutes(3))
        .await
        .unwrap();

    let (list, more) = store
        .conversations(&ConversationQuery {
            user_id: ada.id,
            limit: 10,
            offset: 0,
        })
        .await
        .unwrap();
    assert!(!more);
    assert_eq!(
        list.iter().map(|c| c.title.as_str()).collect::<Vec<_>>(),
        ["first", "second"],
        "most recent activity first"
    );
    assert_eq!(list[0].model.as_deref(), Some("m/one"));
    let (page, more) = store
        .conversations(&ConversationQuery {
            user_id: ada.id,
            limit: 1,
            offset: 1,
        })
        .await
        .unwrap();
    assert_eq!((page.len(), more), (1, false));
    assert_eq!(page[0].title, "second");

    let stored = store.messages(first.id).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].content, "hello");
    assert_eq!(stored[1], failed, "status and error round-trip");

    // Bob sees none of it and cannot touch it.
    assert!(store.conversation(bob.id, first.id).await.unwrap().is_none());
    assert!(matches!(
        store.rename_conversation(bob.id, first.id, "mine", now()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_conversation(bob.id, first.id).await,
        Err(StoreError::NotFound)
    ));
    let (bobs, _) = store
        .conversations(&ConversationQuery {
            user_id: bob.id,
            limit: 10,
            offset: 0,
        })
        .await
        .unwrap();
    assert!(bobs.is_empty());

    let renamed = store
        .rename_conversation(ada.id, second.id, "renamed", now())
        .await
        .unwrap();
    assert_eq!(renamed.title, "renamed");
    store.delete_conversation(ada.id, first.id).await.unwrap();
    assert!(store.conversation(ada.id, first.id).await.unwrap().is_none());
    assert!(
        store.messages(first.id).await.unwrap().is_empty(),
        "messages go with their conversation"
    );
}

fn media(user_id: Uuid, kind: MediaKind) -> MediaRecord {
    let id = Uuid::now_v7();
    MediaRecord {
        id,
        user_id,
        kind,
        content_type: "image/png".into(),
        size_bytes: 1234,
        storage_key: format!("media/{user_id}/{id}.png"),
        generation_id: Some(Uuid::now_v7()),
        created_at: now(),
    }
}

pub async fn media_round_trip(store: Arc<dyn Store>) {
    let user = store
        .create_user(new_user("m@example.com", Role::User))
        .await
        .unwrap();
    let a = media(user.id, MediaKind::Image);
    let b = MediaRecord {
        generation_id: None,
        ..media(user.id, MediaKind::Upload)
    };
    store.insert_media(&a).await.unwrap();
    store.insert_media(&b).await.unwrap();
    assert_eq!(store.media(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.media(b.id).await.unwrap(), Some(b.clone()));
    assert_eq!(store.media(Uuid::now_v7()).await.unwrap(), None);
    let mut keys = store.user_media_keys(user.id).await.unwrap();
    keys.sort();
    let mut expected = vec![a.storage_key, b.storage_key];
    expected.sort();
    assert_eq!(keys, expected);
}

fn generation(user_id: Uuid, kind: GenerationKind, cost_usd: f64) -> GenerationRecord {
    GenerationRecord {
        id: Uuid::now_v7(),
        user_id,
        kind,
        model_requested: "m/requested".into(),
        model_served: Some("m/served".into()),
        status: GenerationStatus::Succeeded,
        prompt_tokens: 12,
        completion_tokens: 34,
        cost_nanousd: usd_to_nanos(cost_usd),
        latency_ms: 56,
        error: None,
        summary: "a prompt".into(),
        conversation_id: None,
        media_ids: vec![Uuid::now_v7(), Uuid::now_v7()],
        created_at: now(),
    }
}

pub async fn generations_are_recorded_in_batches_and_paged(store: Arc<dyn Store>) {
    let user = store
        .create_user(new_user("g@example.com", Role::User))
        .await
        .unwrap();
    let other = store
        .create_user(new_user("o@example.com", Role::User))
        .await
        .unwrap();
    let kinds = [
        GenerationKind::Chat,
        GenerationKind::Image,
        GenerationKind::Chat,
        GenerationKind::Video,
    ];
    let mut batch: Vec<GenerationRecord> = kinds.iter().map(|k| generation(user.id, *k, 0.000_123)).collect();
    batch[1].status = GenerationStatus::Failed;
    batch[1].error = Some("boom".into());
    batch[1].model_served = None;
    batch[2].conversation_id = Some(Uuid::now_v7());
    batch[2].media_ids.clear();
    batch.push(generation(other.id, GenerationKind::Text, 1.0));
    store.record_generations(&batch).await.unwrap();
    store.record_generations(&[]).await.unwrap();

    let query = |kind, before, limit| GenerationQuery {
        user_id: user.id,
        kind,
        before,
        limit,
    };
    let (all, more) = store.generations(&query(None, None, 10)).await.unwrap();
    assert!(!more);
    let mut expected: Vec<GenerationRecord> = batch[..4].to_vec();
    expected.reverse();
    assert_eq!(all, expected, "newest first, every field round-trips");
    assert_eq!(nanos_to_usd(all[0].cost_nanousd), 0.000_123);

    let (chats, _) = store
        .generations(&query(Some(GenerationKind::Chat), None, 10))
        .await
        .unwrap();
    assert_eq!(chats.len(), 2);
    let (page1, more) = store.generations(&query(None, None, 3)).await.unwrap();
    assert!(more);
    let (page2, more) = store
        .generations(&query(None, Some(page1[2].id), 3))
        .await
        .unwrap();
    assert!(!more);
    assert_eq!(page2, vec![batch[0].clone()]);

    // A batch as large as a busy second's (the DuckDB store yields the core
    // while appending it): every row arrives, in order.
    let big: Vec<GenerationRecord> = (0..1_000)
        .map(|_| generation(other.id, GenerationKind::Chat, 0.0))
        .collect();
    store.record_generations(&big).await.unwrap();
    let everything = GenerationQuery {
        user_id: other.id,
        kind: None,
        before: None,
        limit: 2_000,
    };
    let (rows, more) = store.generations(&everything).await.unwrap();
    assert!(!more);
    assert_eq!(rows.len(), 1_001);
    assert_eq!(rows[0], big[999]);
    assert_eq!(rows[500], big[499]);
    assert_eq!(rows[1_000], batch[4]);
}

fn job(user_id: Uuid, at: DateTime<Utc>) -> VideoJob {
    VideoJob {
        id: Uuid::now_v7(),
        user_id,
        generation_id: Uuid::now_v7(),
        model: "m/video".into(),
        prompt: "waves".into(),
        params: r#"{"duration":4}"#.into(),
        upstream_id: "up123".into(),
        polling_url: Some("/api/v1/videos/up123".into()),
        status: JobStatus::Pending,
        error: None,
        media_id: None,
        cost_nanousd: None,
        polls: 0,
        next_poll_at: at,
        created_at: at,
        updated_at: at,
        finished_at: None,
    }
}

pub async fn video_jobs_are_leased_and_finished_once(store: Arc<dyn Store>) {
    let user = store
        .create_user(new_user("v@example.com", Role::User))
        .await
        .unwrap();
    let t = now();
    let j = job(user.id, t);
    store.create_video_job(&j).await.unwrap();
    assert_eq!(store.video_job(j.id).await.unwrap(), Some(j.clone()));
    assert_eq!(store.video_jobs(user.id, 10).await.unwrap(), vec![j.clone()]);

    let lease = t + Duration::seconds(30);
    let claimed = store.claim_video_jobs("a", t, lease, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), [j.id]);
    assert!(
        store
            .claim_video_jobs("b", t, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased to a"
    );

    // B cannot write A's progress; A can, which releases the lease.
    let progress = |owner: &str, polls, next| JobProgress {
        id: j.id,
        owner: owner.into(),
        status: JobStatus::InProgress,
        polls,
        next_poll_at: next,
        now: t,
    };
    assert!(!store.update_video_job(&progress("b", 1, t)).await.unwrap());
    assert!(
        store
            .update_video_job(&progress("a", 1, t + Duration::seconds(5)))
            .await
            .unwrap()
    );
    let stored = store.video_job(j.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.polls), (JobStatus::InProgress, 1));
    assert!(
        store
            .claim_video_jobs("b", t, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let later = t + Duration::seconds(6);
    assert_eq!(
        store
            .claim_video_jobs("b", later, later + Duration::seconds(30), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // B crashes holding the lease; once it runs out, A takes over.
    let after_lease = later + Duration::seconds(31);
    assert_eq!(
        store
            .claim_video_jobs("a", after_lease, after_lease + Duration::seconds(30), 10)
            .await
            .unwrap()
            .len(),
        1
    );

    let outcome = JobOutcome {
        id: j.id,
        status: JobStatus::Completed,
        error: None,
        media_id: Some(Uuid::now_v7()),
        cost_nanousd: Some(usd_to_nanos(0.2)),
        now: after_lease,
    };
    assert!(
        store.finish_video_job(&outcome).await.unwrap(),
        "the first finisher wins"
    );
    assert!(
        !store.finish_video_job(&outcome).await.unwrap(),
        "and only the first"
    );
    assert!(
        !store
            .finish_video_job(&JobOutcome {
                status: JobStatus::Failed,
                ..outcome.clone()
            })
            .await
            .unwrap()
    );
    let done = store.video_job(j.id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.media_id, done.cost_nanousd),
        (JobStatus::Completed, outcome.media_id, outcome.cost_nanousd)
    );
    assert!(done.finished_at.is_some());
    let far = after_lease + Duration::days(1);
    assert!(
        store
            .claim_video_jobs("a", far, far, 10)
            .await
            .unwrap()
            .is_empty(),
        "finished jobs are never claimed"
    );
    assert!(
        !store.update_video_job(&progress("a", 9, far)).await.unwrap(),
        "nor updated"
    );

    // With nothing left open (a store may then skip the claim query), a job
    // created afterwards is still claimed.
    let next = job(user.id, far);
    store.create_video_job(&next).await.unwrap();
    let claimed = store.claim_video_jobs("a", far, far, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), [next.id]);
}

pub async fn deleting_a_user_removes_their_content(store: Arc<dyn Store>) {
    let user = store
        .create_user(new_user("d@example.com", Role::User))
        .await
        .unwrap();
    let c = conversation(user.id, "c", now());
    store
        .create_conversation(&c, &[message(c.id, "user", "hi", now())])
        .await
        .unwrap();
    let m = media(user.id, MediaKind::Image);
    store.insert_media(&m).await.unwrap();
    let j = job(user.id, now());
    store.create_video_job(&j).await.unwrap();
    let g = generation(user.id, GenerationKind::Chat, 0.5);
    store.record_generations(std::slice::from_ref(&g)).await.unwrap();

    store.delete_user(user.id).await.unwrap();
    assert!(store.conversation(user.id, c.id).await.unwrap().is_none());
    assert!(store.messages(c.id).await.unwrap().is_empty());
    assert!(store.media(m.id).await.unwrap().is_none());
    assert!(store.video_job(j.id).await.unwrap().is_none());
    let (kept, _) = store
        .generations(&GenerationQuery {
            user_id: user.id,
            kind: None,
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(kept, vec![g], "usage records stay for accounting");
}

pub async fn usage_is_summed_per_user_model_and_day(store: Arc<dyn Store>) {
    let ada = store
        .create_user(new_user("ada@example.com", Role::User))
        .await
        .unwrap();
    let bob = store
        .create_user(new_user("bob@example.com", Role::User))
        .await
        .unwrap();
    let yesterday = now() - Duration::days(1);
    let mut records = vec![
        generation(ada.id, GenerationKind::Chat, 0.5),
        generation(ada.id, GenerationKind::Image, 0.25),
        generation(bob.id, GenerationKind::Chat, 0.125),
        GenerationRecord {
            created_at: yesterday,
            ..generation(bob.id, GenerationKind::Chat, 1.0)
        },
        GenerationRecord {
            created_at: now() - Duration::days(40),
            ..generation(bob.id, GenerationKind::Chat, 9.0)
        },
    ];
    records[1].model_served = None;
    records[1].model_requested = "m/image".into();
    store.record_generations(&records).await.unwrap();
    let ghost = generation(Uuid::now_v7(), GenerationKind::Text, 0.001);
    store
        .record_generations(std::slice::from_ref(&ghost))
        .await
        .unwrap();

    let report = store.usage_report(now() - Duration::days(30)).await.unwrap();
    let cost = |rows: &[UsageTotal], key: &str| {
        rows.iter()
            .find(|r| r.key == key)
            .map(|r| nanos_to_usd(r.cost_nanousd))
    };
    assert_eq!(report.by_user.len(), 3);
    assert_eq!(report.by_user[0].key, bob.id.to_string(), "biggest spender first");
    assert_eq!(report.by_user[0].label.as_deref(), Some("bob@example.com"));
    assert_eq!(
        report.by_user[0].generations, 2,
        "the 40-day-old record is outside"
    );
    assert_eq!(cost(&report.by_user, &ada.id.to_string()), Some(0.75));
    assert_eq!(
        report
            .by_user
            .iter()
            .find(|r| r.key == ghost.user_id.to_string())
            .and_then(|r| r.label.clone()),
        None
    );
    assert_eq!(report.by_user[1].tokens, 2 * 46);
    assert_eq!(cost(&report.by_model, "m/served"), Some(1.626));
    assert_eq!(
        cost(&report.by_model, "m/image"),
        Some(0.25),
        "the requested model when none served"
    );
    let days: Vec<&str> = report.by_day.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(
        days,
        [
            yesterday.format("%Y-%m-%d").to_string(),
            now().format("%Y-%m-%d").to_string()
        ]
    );
    assert_eq!(
        cost(&report.by_day, &yesterday.format("%Y-%m-%d").to_string()),
        Some(1.0)
    );
}

fn api_key(user_id: Uuid, n: u8) -> ApiKey {
    ApiKey {
        id: Uuid::now_v7(),
        user_id,
        public_id: format!("pub{n}"),
        key_hash: token(n),
        name: format!("key {n}"),
        scopes: vec!["chat".into(), "images".into()],
        expires_at: Some(now() + Duration::days(30)),
        created_at: now(),
        last_used_at: None,
        revoked_at: None,
    }
}

pub async fn api_keys_are_listed_revoked_and_touched(store: Arc<dyn Store>) {
    let ada = store
        .create_user(new_user("ada@example.com", Role::User))
        .await
        .unwrap();
    let bob = store
        .create_user(new_user("bob@example.com", Role::User))
        .await
        .unwrap();
    let a1 = api_key(ada.id, 1);
    let a2 = ApiKey {
        scopes: Vec::new(),
        expires_at: None,
        ..api_key(ada.id, 2)
    };
    let b1 = api_key(bob.id, 3);
    for k in [&a1, &a2, &b1] {
        store.create_api_key(k).await.unwrap();
    }
    assert_eq!(
        store.api_keys(ada.id).await.unwrap(),
        vec![a2.clone(), a1.clone()],
        "newest first, all fields"
    );
    assert_eq!(store.live_api_keys().await.unwrap().len(), 3);

    // Bob cannot revoke Ada's key; Ada can; twice is not found.
    assert!(matches!(
        store.revoke_api_key(a1.id, Some(bob.id), now()).await,
        Err(StoreError::NotFound)
    ));
    let revoked = store.revoke_api_key(a1.id, Some(ada.id), now()).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(matches!(
        store.revoke_api_key(a1.id, None, now()).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.api_keys(ada.id).await.unwrap(), vec![a2.clone()]);
    assert_eq!(store.live_api_keys().await.unwrap().len(), 2);
    // An admin (no user given) may revoke anyone's.
    store.revoke_api_key(b1.id, None, now()).await.unwrap();

    let used = now() + Duration::seconds(3);
    store.touch_api_keys(&[(a2.id, used)]).await.unwrap();
    assert_eq!(store.api_keys(ada.id).await.unwrap()[0].last_used_at, Some(used));

    store.delete_user(ada.id).await.unwrap();
    assert!(
        store.live_api_keys().await.unwrap().is_empty(),
        "keys go with their user"
    );
}

pub async fn budget_overrides_and_spend(store: Arc<dyn Store>) {
    let ada = store
        .create_user(new_user("ada@example.com", Role::User))
        .await
        .unwrap();
    let budget = BudgetOverride {
        user_id: ada.id,
        daily_nanousd: Some(usd_to_nanos(1.5)),
        monthly_nanousd: None,
        daily_requests: Some(100),
        monthly_requests: None,
    };
    store.set_budget_override(&budget, now()).await.unwrap();
    assert_eq!(store.budget_overrides().await.unwrap(), vec![budget.clone()]);
    let changed = BudgetOverride {
        monthly_nanousd: Some(usd_to_nanos(20.0)),
        ..budget.clone()
    };
    store.set_budget_override(&changed, now()).await.unwrap();
    assert_eq!(store.budget_overrides().await.unwrap(), vec![changed]);
    store
        .set_budget_override(
            &BudgetOverride {
                user_id: ada.id,
                ..Default::default()
            },
            now(),
        )
        .await
        .unwrap();
    assert!(
        store.budget_overrides().await.unwrap().is_empty(),
        "an empty override is removed"
    );

    let records = vec![
        generation(ada.id, GenerationKind::Chat, 0.25),
        generation(ada.id, GenerationKind::Chat, 0.5),
        GenerationRecord {
            created_at: now() - Duration::days(2),
            ..generation(ada.id, GenerationKind::Chat, 9.0)
        },
    ];
    store.record_generations(&records).await.unwrap();
    let spend = store.spend_since(now() - Duration::hours(1)).await.unwrap();
    assert_eq!(
        spend,
        vec![Spend {
            user_id: ada.id,
            cost_nanousd: usd_to_nanos(0.75),
            requests: 2
        }]
    );
}

/// `atelier db copy` moves the tables of [`tables::TABLES`](crate::tables::TABLES); a
/// backend's schema must be exactly those, column for column.
pub async fn tables_are_described(store: &dyn crate::tables::Introspect) {
    let mut described: Vec<&str> = crate::tables::TABLES.iter().map(|t| t.name).collect();
    described.sort_unstable();
    assert_eq!(store.table_names().await.unwrap(), described);
    for table in crate::tables::TABLES {
        let columns: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            store.column_names(table.name).await.unwrap(),
            columns,
            "{}",
            table.name
        );
    }
}
