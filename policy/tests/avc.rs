//! The access vector cache and the shipped default policy: decisions, the
//! cache's bookkeeping, permissive mode and the audit line.

use tessera_policy::compile::compile;
use tessera_policy::{
    Avc, Class, ConsolePerm, Decision, DomainPerm, EventPerm, GrantPerm, IoreqPerm, MmuPerm, Mode,
    Perm, Policy, StorePerm, VtpmPerm, AVC_SLOTS, DEFAULT_DOMAIN_LABEL,
};

const DEFAULT_POLICY: &str = include_str!("../default.te");

fn default_binary() -> Vec<u8> {
    compile(DEFAULT_POLICY)
        .map_err(|e| e.in_file("policy/default.te").to_string())
        .unwrap()
}

fn ctx(ty: &str) -> String {
    format!("system_u:system_r:{ty}")
}

#[test]
fn default_policy_lets_guests_reach_only_services() {
    let bin = default_binary();
    let policy = Policy::load(&bin).unwrap();
    let mut avc = Avc::new(policy, Mode::Enforcing);
    let sid = |t: &str| avc.sid_of(&ctx(t)).unwrap();
    let (dom_u, store, dm, vtpm, dom_b, console) = (
        sid("domU_t"),
        sid("xenstore_t"),
        sid("devmodel_t"),
        sid("vtpm_t"),
        sid("domB_t"),
        sid("console_t"),
    );
    assert_eq!(avc.sid_of(DEFAULT_DOMAIN_LABEL), Some(dom_u));

    let allowed: &[(_, _, Perm)] = &[
        (dom_u, store, EventPerm::Bind.into()),
        (dom_u, store, EventPerm::Send.into()),
        (store, dom_u, EventPerm::Send.into()),
        (dom_u, store, GrantPerm::MapWrite.into()),
        (store, dom_u, GrantPerm::MapRead.into()),
        (dom_u, store, StorePerm::Watch.into()),
        (dom_u, vtpm, VtpmPerm::Command.into()),
        (dm, dom_u, IoreqPerm::Complete.into()),
        (dm, dom_u, MmuPerm::MapWrite.into()),
        (dom_u, dom_u, MmuPerm::Physmap.into()),
        (dom_u, dom_u, DomainPerm::Shutdown.into()),
        (dom_u, console, ConsolePerm::Write.into()),
        (dom_b, dom_u, DomainPerm::Create.into()),
        (dom_b, store, StorePerm::Introduce.into()),
    ];
    for &(s, t, p) in allowed {
        assert_eq!(avc.check(s, t, p), Decision::Allow, "{s:?} {t:?} {p:?}");
    }

    let denied: &[(_, _, Perm)] = &[
        (dom_u, dom_b, EventPerm::Send.into()),
        // Guests share domU_t, so this is also "guest maps another guest".
        (dom_u, dom_u, GrantPerm::MapRead.into()),
        (dom_u, dm, MmuPerm::MapRead.into()),
        (dom_u, dom_u, DomainPerm::Create.into()),
        (dom_u, store, DomainPerm::Pause.into()),
        (dom_u, store, StorePerm::Introduce.into()),
        (dom_u, console, ConsolePerm::Read.into()),
        (store, vtpm, VtpmPerm::Command.into()),
        (dom_u, dm, IoreqPerm::Register.into()),
    ];
    for &(s, t, p) in denied {
        assert!(
            matches!(avc.check(s, t, p), Decision::Deny(_)),
            "{s:?} {t:?} {p:?}"
        );
    }

    // A guest's channel to the store is labelled by type_transition.
    let chan = avc.policy().transition(dom_u, store, Class::Event).unwrap();
    assert_eq!(
        avc.policy().context(chan).unwrap().to_string(),
        ctx("store_channel_t")
    );
    assert!(avc.check(dom_u, chan, EventPerm::Send.into()).is_allowed());
    assert!(!avc.check(dom_u, chan, EventPerm::Reset.into()).is_allowed());
}

#[test]
fn denials_print_the_audit_line() {
    let bin = default_binary();
    let mut avc = Avc::new(Policy::load(&bin).unwrap(), Mode::Enforcing);
    let (u, b) = (
        avc.sid_of(&ctx("domU_t")).unwrap(),
        avc.sid_of(&ctx("domB_t")).unwrap(),
    );
    let Decision::Deny(denial) = avc.check(u, b, EventPerm::Send.into()) else {
        panic!("allowed")
    };
    assert_eq!(
        avc.audit(denial).to_string(),
        "avc: denied { send } for source=system_u:system_r:domU_t target=system_u:system_r:domB_t class=event"
    );

    avc.set_mode(Mode::Permissive);
    let d = avc.check(u, b, EventPerm::Send.into());
    assert!(d.is_allowed());
    let Decision::AllowPermissive(denial) = d else {
        panic!("{d:?}")
    };
    assert!(avc
        .audit(denial)
        .to_string()
        .ends_with("class=event permissive=1"));
    assert_eq!(avc.check(u, u, MmuPerm::Physmap.into()), Decision::Allow);
    assert_eq!(avc.check(u, u, MmuPerm::Physmap.into()).denial(), None);
}

#[test]
fn the_cache_serves_repeated_checks() {
    let bin = default_binary();
    let mut avc = Avc::new(Policy::load(&bin).unwrap(), Mode::Enforcing);
    let (u, s) = (
        avc.sid_of(&ctx("domU_t")).unwrap(),
        avc.sid_of(&ctx("xenstore_t")).unwrap(),
    );
    for _ in 0..10 {
        let _ = avc.check(u, s, EventPerm::Send.into());
        // Other permissions of the same class share the cached vector.
        let _ = avc.check(u, s, EventPerm::Bind.into());
        let _ = avc.check(u, s, EventPerm::Reset.into());
    }
    assert_eq!(avc.misses(), 1);
    let _ = avc.check(u, s, GrantPerm::Copy.into());
    assert_eq!(avc.misses(), 2);
    avc.flush();
    let _ = avc.check(u, s, EventPerm::Send.into());
    assert_eq!(avc.misses(), 3);
}

#[test]
fn cached_allow_says_yes_only_for_a_cached_allowed_vector() {
    let bin = default_binary();
    let mut avc = Avc::new(Policy::load(&bin).unwrap(), Mode::Enforcing);
    let (u, s, b) = (
        avc.sid_of(&ctx("domU_t")).unwrap(),
        avc.sid_of(&ctx("xenstore_t")).unwrap(),
        avc.sid_of(&ctx("domB_t")).unwrap(),
    );
    let send: Perm = EventPerm::Send.into();
    assert!(!avc.cached_allow(u, s, send), "nothing is cached yet");
    assert_eq!(avc.check(u, s, send), Decision::Allow);
    assert!(avc.cached_allow(u, s, send));
    assert!(
        avc.cached_allow(u, s, EventPerm::Bind.into()),
        "same vector"
    );
    assert!(
        !avc.cached_allow(u, s, GrantPerm::Copy.into()),
        "other class"
    );
    // A cached denial is not an allow.
    assert!(matches!(avc.check(u, b, send), Decision::Deny(_)));
    assert!(!avc.cached_allow(u, b, send));
    // Permissive mode does not turn a denial into a cached allow either.
    avc.set_mode(Mode::Permissive);
    assert!(!avc.cached_allow(u, b, send));
    avc.flush();
    assert!(!avc.cached_allow(u, s, send), "flushed");
    assert_eq!(avc.misses(), 2);
}

#[test]
fn colliding_slots_still_give_exact_answers() {
    // More (source, target, class) triples than slots: some must share a
    // slot, and every answer must still match the policy's slow path.
    let mut src = String::from("user u; role r; attribute all;\n");
    for i in 0..24 {
        src.push_str(&format!("type t{i}, all;\n"));
    }
    for i in 0..24 {
        src.push_str(&format!("allow t{i} t{}:event {{ send }};\n", (i * 7) % 24));
    }
    let bin = compile(&src).unwrap();
    let policy = Policy::load(&bin).unwrap();
    let mut avc = Avc::new(policy, Mode::Enforcing);
    let sids: Vec<_> = (0..24)
        .map(|i| avc.sid_of(&format!("u:r:t{i}")).unwrap())
        .collect();
    for round in 0..3 {
        for (i, &s) in sids.iter().enumerate() {
            for (j, &t) in sids.iter().enumerate() {
                let expect = j == (i * 7) % 24;
                assert_eq!(
                    avc.check(s, t, EventPerm::Send.into()).is_allowed(),
                    expect,
                    "round {round} t{i} t{j}"
                );
            }
        }
    }
    const { assert!(24 * 24 > AVC_SLOTS) };
    assert!(
        avc.misses() > (24 * 24) as u64,
        "a 128-slot cache cannot hold 576 triples"
    );
}

#[test]
fn a_sid_from_another_policy_is_denied_without_panicking() {
    let big = compile("user u; role r; type a; type b; type c; allow c c:event send;").unwrap();
    let small = compile("user u; role r; type a;").unwrap();
    let foreign = Policy::load(&big).unwrap().sid_of("u:r:c").unwrap();
    let mut avc = Avc::new(Policy::load(&small).unwrap(), Mode::Enforcing);
    let Decision::Deny(d) = avc.check(foreign, foreign, EventPerm::Send.into()) else {
        panic!()
    };
    assert_eq!(
        avc.audit(d).to_string(),
        "avc: denied { send } for source=?:?:#2 target=?:?:#2 class=event"
    );
}
