//! The compiler: what compiles, and one negative test per error path, each
//! checking the exact message and position a policy author would see.

use tessera_policy::compile::{allow_rules, compile, CompileError, ErrorKind, Span};
use tessera_policy::{Avc, Class, EventPerm, Mode, Perm, Policy};

const PRELUDE: &str = "user u; role r;\n";

fn err(src: &str) -> String {
    compile(src)
        .expect_err("source should not compile")
        .in_file("policy.te")
        .to_string()
}

fn allowed(policy: &Policy<'_>, s: &str, t: &str, class: Class) -> u32 {
    let (s, t) = (policy.type_index(s).unwrap(), policy.type_index(t).unwrap());
    policy.allowed(s, t, class)
}

#[test]
fn attributes_and_self_expand_at_compile_time() {
    let src = "user u; role r;
        attribute guest; attribute svc;
        type g1_t, guest; type g2_t, guest;
        type s_t, svc;
        allow guest svc:event { bind send };
        allow guest svc:event status;  // merges with the line above
        allow svc self:grant setup;    # self: each type to itself
        type_transition guest s_t:event chan_t;
        type chan_t;";
    let bin = compile(src).unwrap();
    let p = Policy::load(&bin).unwrap();
    let bind_send_status = 0b1110;
    assert_eq!(allowed(&p, "g1_t", "s_t", Class::Event), bind_send_status);
    assert_eq!(allowed(&p, "g2_t", "s_t", Class::Event), bind_send_status);
    assert_eq!(allowed(&p, "s_t", "s_t", Class::Grant), 1);
    assert_eq!(allowed(&p, "g1_t", "g2_t", Class::Event), 0);
    assert_eq!(allowed(&p, "s_t", "g1_t", Class::Event), 0);
    assert_eq!(p.rule_count(), 3);

    let g1 = p.sid_of("u:r:g1_t").unwrap();
    let s = p.sid_of("u:r:s_t").unwrap();
    let chan = p.transition(g1, s, Class::Event).unwrap();
    assert_eq!(p.context(chan).unwrap().to_string(), "u:r:chan_t");
    assert_eq!(p.transition(s, g1, Class::Event), None);
    assert_eq!(p.transition(g1, s, Class::Grant), None);

    let mut avc = Avc::new(p, Mode::Enforcing);
    assert!(avc.check(g1, s, EventPerm::Send.into()).is_allowed());
    assert!(!avc.check(g1, s, Perm::from(EventPerm::Reset)).is_allowed());
}

#[test]
fn declarations_may_follow_their_use_and_output_is_deterministic() {
    let src = "allow b_t a_t:console write; type a_t; type b_t; user u; role r;";
    assert_eq!(compile(src).unwrap(), compile(src).unwrap());
    let bin = compile(src).unwrap();
    let p = Policy::load(&bin).unwrap();
    assert_eq!(allowed(&p, "b_t", "a_t", Class::Console), 1);
}

#[test]
fn an_empty_policy_compiles_and_denies_everything() {
    let bin = compile("# nothing\n// at all\n").unwrap();
    let p = Policy::load(&bin).unwrap();
    assert_eq!(p.type_count(), 0);
    assert_eq!(p.sid_of("u:r:t"), None);
}

#[test]
fn errors_carry_line_and_column() {
    let src = "user u; role r;\ntype a; type b;\n\nallow a b:event sned;\n";
    assert_eq!(
        err(src),
        "policy.te:4:17: unknown permission \"sned\" for class event"
    );
    let e = compile(src).unwrap_err();
    assert_eq!(
        e.span,
        Span {
            line: 4,
            column: 17
        }
    );
    assert_eq!(
        e.kind,
        ErrorKind::UnknownPerm {
            perm: "sned".into(),
            class: "event"
        }
    );
    assert_eq!(
        e.to_string(),
        "4:17: unknown permission \"sned\" for class event"
    );
}

#[test]
fn unknown_permission_in_a_set() {
    assert_eq!(
        err("type a;\nallow a self:grant { setup mapp };"),
        "policy.te:2:28: unknown permission \"mapp\" for class grant"
    );
}

#[test]
fn unexpected_character() {
    assert_eq!(err("type a$;"), "policy.te:1:7: unexpected character '$'");
    assert_eq!(
        err("type a; / comment"),
        "policy.te:1:9: unexpected character '/'"
    );
    assert_eq!(err("type é;"), "policy.te:1:6: unexpected character 'é'");
}

#[test]
fn missing_semicolon() {
    assert_eq!(
        err("type a\ntype b;"),
        "policy.te:2:1: expected ',' or ';', found \"type\""
    );
    assert_eq!(
        err("attribute x"),
        "policy.te:1:12: expected ';', found end of input"
    );
    assert_eq!(
        err("type a; allow a self:event send"),
        "policy.te:1:32: expected ';', found end of input"
    );
}

#[test]
fn missing_colon_before_class() {
    assert_eq!(
        err("type a; allow a a event send;"),
        "policy.te:1:19: expected ':' before the class, found \"event\""
    );
}

#[test]
fn not_a_statement() {
    assert_eq!(
        err("types a;"),
        "policy.te:1:1: expected a statement (type, attribute, user, role, allow or type_transition), found \"types\""
    );
    assert_eq!(
        err("type a;;"),
        "policy.te:1:8: expected a statement (type, attribute, user, role, allow or type_transition), found ';'"
    );
}

#[test]
fn missing_names() {
    assert_eq!(
        err("type ;"),
        "policy.te:1:6: expected a type name, found ';'"
    );
    assert_eq!(
        err("type a, ;"),
        "policy.te:1:9: expected an attribute name, found ';'"
    );
    assert_eq!(
        err("user"),
        "policy.te:1:5: expected a user name, found end of input"
    );
    assert_eq!(
        err("role {"),
        "policy.te:1:6: expected a role name, found '{'"
    );
    assert_eq!(
        err("allow :"),
        "policy.te:1:7: expected a source type or attribute, found ':'"
    );
    assert_eq!(
        err("allow a :"),
        "policy.te:1:9: expected a target type, attribute or self, found ':'"
    );
    assert_eq!(
        err("allow a b: ;"),
        "policy.te:1:12: expected a class name, found ';'"
    );
    assert_eq!(
        err("type_transition a b:event ;"),
        "policy.te:1:27: expected the new type, found ';'"
    );
}

#[test]
fn bad_permission_lists() {
    assert_eq!(
        err("type a; allow a a:event { };"),
        "policy.te:1:27: expected a permission name, found '}'"
    );
    assert_eq!(
        err("type a; allow a a:event { send"),
        "policy.te:1:31: expected a permission name or '}', found end of input"
    );
    assert_eq!(
        err("type a; allow a a:event { send, bind };"),
        "policy.te:1:31: expected a permission name or '}', found ','"
    );
    assert_eq!(
        err("type a; allow a a:event ;"),
        "policy.te:1:25: expected a permission name or '{', found ';'"
    );
    assert_eq!(
        err("type a; allow a a:event allow;"),
        "policy.te:1:25: expected a permission name or '{', found \"allow\""
    );
}

#[test]
fn keyword_as_name() {
    assert_eq!(
        err("type allow;"),
        "policy.te:1:6: \"allow\" is a keyword, expected a name"
    );
    assert_eq!(
        err("attribute type;"),
        "policy.te:1:11: \"type\" is a keyword, expected a name"
    );
}

#[test]
fn name_too_long() {
    let long = "a".repeat(256);
    assert_eq!(
        err(&format!("type {long};")),
        format!("policy.te:1:6: name \"{long}\" is longer than 255 bytes")
    );
    assert!(compile(&format!("{PRELUDE}type {};", "a".repeat(255))).is_ok());
}

#[test]
fn duplicate_declarations() {
    assert_eq!(
        err("type a;\ntype a;"),
        "policy.te:2:6: type \"a\" is already declared"
    );
    assert_eq!(
        err("attribute x; attribute x;"),
        "policy.te:1:24: attribute \"x\" is already declared"
    );
    assert_eq!(
        err("user u; user u;"),
        "policy.te:1:14: user \"u\" is already declared"
    );
    assert_eq!(
        err("role r; role r;"),
        "policy.te:1:14: role \"r\" is already declared"
    );
}

#[test]
fn type_and_attribute_with_one_name() {
    assert_eq!(
        err("type a; attribute a;"),
        "policy.te:1:19: \"a\" is declared both as a type and as an attribute"
    );
    assert_eq!(
        err("attribute a; type a;"),
        "policy.te:1:19: \"a\" is declared both as a type and as an attribute"
    );
}

#[test]
fn too_many_types() {
    let mut src = String::from(PRELUDE);
    for i in 0..65_535 {
        src.push_str(&format!("type t{i:05};\n"));
    }
    assert!(compile(&src).is_ok(), "65535 types fit");
    src.push_str("type t65535;\n");
    assert_eq!(
        err(&src),
        "policy.te:65537:6: too many types (at most 65535)"
    );
}

#[test]
fn too_many_users() {
    let mut src = String::new();
    for i in 0..65_536 {
        src.push_str(&format!("user u{i:05};\n"));
    }
    assert_eq!(
        err(&src),
        "policy.te:65536:6: too many users (at most 65535)"
    );
}

#[test]
fn unknown_types() {
    assert_eq!(
        err("type a; allow b a:event send;"),
        "policy.te:1:15: unknown type or attribute \"b\""
    );
    assert_eq!(
        err("type a; allow a b:event send;"),
        "policy.te:1:17: unknown type or attribute \"b\""
    );
    assert_eq!(
        err("type a; type_transition a c:event a;"),
        "policy.te:1:27: unknown type or attribute \"c\""
    );
    assert_eq!(
        err("type a; type_transition a a:event n;"),
        "policy.te:1:35: unknown type or attribute \"n\""
    );
    assert_eq!(
        err("type a, nope;"),
        "policy.te:1:9: unknown type or attribute \"nope\""
    );
}

#[test]
fn type_listed_as_attribute() {
    assert_eq!(
        err("type a; type b, a;"),
        "policy.te:1:17: expected an attribute, \"a\" is not one"
    );
}

#[test]
fn transition_to_an_attribute() {
    assert_eq!(
        err("type a; attribute x; type_transition a a:event x;"),
        "policy.te:1:48: expected a type as the new type, \"x\" is an attribute"
    );
}

#[test]
fn self_as_source() {
    assert_eq!(
        err("type a; allow self a:event send;"),
        "policy.te:1:15: \"self\" is only valid as a target"
    );
    assert_eq!(
        err("type self;"),
        "policy.te:1:6: \"self\" is only valid as a target"
    );
}

#[test]
fn unknown_class() {
    assert_eq!(
        err("type a; allow a a:evnt send;"),
        "policy.te:1:19: unknown class \"evnt\""
    );
    assert_eq!(
        err("type a; type_transition a a:chan a;"),
        "policy.te:1:29: unknown class \"chan\""
    );
}

#[test]
fn conflicting_transitions() {
    let src = "attribute g; type a, g; type b; type c; type d;
type_transition a b:event c;
type_transition g b:event d;";
    assert_eq!(
        err(src),
        "policy.te:3:27: conflicting type_transition for a b:event, an earlier one chose \"c\""
    );
    // Restating the same transition is harmless.
    assert!(
        compile("type a; type b; type_transition a a:event b; type_transition a a:event b;")
            .is_ok()
    );
}

#[test]
fn compile_error_is_a_std_error() {
    fn takes(_: &dyn std::error::Error) {}
    let e: CompileError = compile("x").unwrap_err();
    takes(&e);
}

#[test]
fn allow_rules_lists_each_statement_with_its_expansion() {
    let src = "user u; role r;\n\
               attribute guest; attribute empty;\n\
               type a_t, guest; type b_t, guest; type s_t;\n\
               allow guest s_t:event { bind send };\n\
               allow guest self:domain shutdown;\n\
               allow empty s_t:grant map_read;\n";
    let rules = allow_rules(src).unwrap();
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0].span, Span { line: 4, column: 7 });
    assert_eq!(rules[0].class, Class::Event);
    assert_eq!(rules[0].to_string(), "allow guest s_t:event { bind send }");
    let pairs = |i: usize| -> Vec<(&str, &str)> {
        rules[i]
            .pairs
            .iter()
            .map(|(s, t)| (s.as_str(), t.as_str()))
            .collect()
    };
    assert_eq!(pairs(0), [("a_t", "s_t"), ("b_t", "s_t")]);
    assert_eq!(rules[1].to_string(), "allow guest self:domain shutdown");
    assert_eq!(pairs(1), [("a_t", "a_t"), ("b_t", "b_t")]);
    // An attribute without members grants nothing.
    assert!(pairs(2).is_empty());
}

#[test]
fn allow_rules_reports_the_compile_error() {
    let src = "user u; role r; type a_t; allow a_t a_t:event bnid;";
    assert_eq!(allow_rules(src).unwrap_err(), compile(src).unwrap_err());
}
