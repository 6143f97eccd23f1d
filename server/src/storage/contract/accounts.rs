//! The accounts and admin parts of the contract: users, devices, secrets, cursors, API
//! tokens, admin users and user controls.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Open;
use super::support::partition;
use crate::storage::{
    AdminRole, DeviceState, StoreError, StoredAdminUser, StoredApiToken, StoredDevice, StoredUser, UserControls,
};

pub(super) fn users_devices_and_secrets(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let ann = StoredUser { name: "ann".to_owned(), password_hash: "h1".to_owned() };
    store.add_user(&ann).expect("add");
    assert!(matches!(store.add_user(&ann), Err(StoreError::UserExists { name }) if name == "ann"));
    assert!(store.set_user_password("ann", "h2").expect("set"));
    assert!(!store.set_user_password("bob", "h2").expect("set"));
    assert_eq!(store.user("ann").expect("user"), Some(StoredUser { password_hash: "h2".to_owned(), ..ann }));
    assert_eq!(store.user("bob").expect("user"), None);
    assert_eq!(store.user_count().expect("count"), 1);

    let mut device = StoredDevice {
        client_id: "c1".to_owned(),
        user_id: "ann".to_owned(),
        platform: "ios".to_owned(),
        app_version: "1.2".to_owned(),
        model: "phone".to_owned(),
        created_ms: -5,
        last_seen_ms: 10,
        state: DeviceState::Active,
        token_generation: 3,
    };
    store.put_device(&device).expect("put");
    assert_eq!(store.device("c1").expect("device"), Some(device.clone()));
    device.state = DeviceState::Locked;
    store.put_device(&device).expect("put");
    assert_eq!(store.device("c1").expect("device"), Some(device));
    assert_eq!(store.device("c2").expect("device"), None);

    let calls = AtomicU64::new(0);
    let generate = || {
        calls.fetch_add(1, Ordering::Relaxed);
        vec![1, 2, 3]
    };
    assert_eq!(store.secret("k", &generate).expect("secret"), [1, 2, 3]);
    assert_eq!(store.secret("k", &|| vec![9]).expect("secret"), [1, 2, 3]);
    assert_eq!(calls.load(Ordering::Relaxed), 1);

    let name = partition("u1");
    assert_eq!(store.cursor("c1", &name).expect("cursor"), None);
    store.save_cursors(&[("c1".to_owned(), name.clone(), 4), ("c1".to_owned(), partition("u2"), 9)]).expect("save");
    store.save_cursors(&[("c1".to_owned(), name.clone(), 6)]).expect("save");
    assert_eq!(store.cursor("c1", &name).expect("cursor"), Some(6));
    assert_eq!(store.cursor("c1", &partition("u2")).expect("cursor"), Some(9));
    assert_eq!(store.cursor("c2", &name).expect("cursor"), None);
}

pub(super) fn users_page_by_prefix_and_after(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    for name in ["ann", "bob", "bobby", "carl", "bo"] {
        store.add_user(&StoredUser { name: name.into(), password_hash: "h".into() }).expect("add");
    }
    let names = |users: Vec<StoredUser>| users.into_iter().map(|user| user.name).collect::<Vec<_>>();
    assert_eq!(names(store.users_page(None, "", 2).expect("page")), ["ann", "bo"]);
    assert_eq!(names(store.users_page(Some("bo"), "", 10).expect("page")), ["bob", "bobby", "carl"]);
    assert_eq!(names(store.users_page(None, "bob", 10).expect("page")), ["bob", "bobby"]);
    assert_eq!(names(store.users_page(Some("bob"), "bob", 10).expect("page")), ["bobby"]);
    assert_eq!(names(store.users_page(Some("a"), "bo", 10).expect("page")), ["bo", "bob", "bobby"]);
    assert!(store.users_page(None, "", 0).expect("page").is_empty());
    assert!(store.delete_user("bob").expect("delete"));
    assert!(!store.delete_user("bob").expect("delete"));
    assert_eq!(names(store.users_page(None, "bo", 10).expect("page")), ["bo", "bobby"]);
    assert_eq!(store.user_count().expect("count"), 4);
}

pub(super) fn tokens_admins_and_controls_round_trip(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let token = StoredApiToken {
        id: "t1".into(),
        name: "ci".into(),
        role: AdminRole::Viewer,
        secret_hash: vec![1, 2],
        created_ms: 5,
    };
    let other = StoredApiToken { id: "t0".into(), role: AdminRole::Admin, ..token.clone() };
    store.put_api_token(&token).expect("put");
    store.put_api_token(&other).expect("put");
    assert_eq!(store.api_token("t1").expect("token"), Some(token.clone()));
    assert_eq!(store.api_tokens().expect("tokens"), vec![other, token], "by id");
    assert!(store.delete_api_token("t1").expect("delete"));
    assert!(!store.delete_api_token("t1").expect("delete"));
    assert!(store.api_token("t1").expect("token").is_none());
    let admin =
        StoredAdminUser { name: "admin".into(), password_hash: "h".into(), role: AdminRole::Admin, created_ms: 1 };
    assert_eq!(store.admin_user_count().expect("count"), 0);
    store.put_admin_user(&admin).expect("put");
    assert_eq!(store.admin_user("admin").expect("admin"), Some(admin));
    assert_eq!(store.admin_user("nobody").expect("admin"), None);
    assert_eq!(store.admin_user_count().expect("count"), 1);
    assert_eq!(store.user_controls("ann").expect("controls"), UserControls::default());
    let controls = UserControls { disabled: true, sessions_revoked_ms: 7 };
    store.set_user_controls("ann", &controls).expect("set");
    assert_eq!(store.user_controls("ann").expect("controls"), controls);
    assert_eq!(store.controlled_users().expect("controlled"), vec![("ann".to_owned(), controls)]);
    store.set_user_controls("ann", &UserControls::default()).expect("set");
    assert!(store.controlled_users().expect("controlled").is_empty());
}
