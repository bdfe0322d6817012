//! The document the route table builds: valid OpenAPI 3.1, every reference resolves, every
//! route of the table is in it with the schemas of the `api` crate's types.

#[test]
fn the_document_is_valid_and_every_schema_reference_resolves() {
    let doc = bff::openapi::served();
    let text = serde_json::to_string_pretty(&doc).unwrap();
    if let Ok(path) = std::env::var("NOTIFY_DUMP_OPENAPI") {
        std::fs::write(path, &text).unwrap();
    }
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let schemas = json["components"]["schemas"].as_object().unwrap();
    let mut refs = Vec::new();
    collect_refs(&json, &mut refs);
    assert!(refs.len() > 30, "{refs:?}");
    for r in refs {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(schemas.contains_key(name), "{r} does not resolve");
    }
    for route in bff::routes::ROUTES.iter() {
        let method = route.method.method().as_str().to_ascii_lowercase();
        let op = &json["paths"][route.path][&method];
        assert!(op.is_object(), "{method} {} is not documented", route.path);
        assert_eq!(
            op["requestBody"].is_object(),
            route.request.is_some(),
            "{method} {}",
            route.path
        );
    }
    // The send body is the service's own type: its limits are in the document.
    let send = &schemas["SendBody"];
    assert_eq!(send["properties"]["recipients"]["maxItems"], 1000);
    assert_eq!(send["additionalProperties"], false);
}

fn collect_refs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    out.push(v.as_str().unwrap().to_owned());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
