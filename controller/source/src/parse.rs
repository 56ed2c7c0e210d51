//! Manifest files to objects: multi-document YAML and JSON, dispatch by `apiVersion` + `kind`, API defaults.

use crate::defaults;
use causeway_model::{Diagnostic, ObjectRef};
use causeway_translate::{IpPool, Kind, KubeObject};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::Value;

/// A reference to a manifests file, for diagnostics.
pub fn file_ref(file_name: &str) -> ObjectRef {
    ObjectRef::new("File", "", file_name)
}

/// Parse one manifests file into the objects it holds.
///
/// - `*.json` files hold one JSON object, several concatenated ones, or a `List` (`{"kind": "List", "items": [...]}`);
///   every other file is YAML with any number of `---`-separated documents (a document may also be a `List`).
/// - Each document is dispatched by `apiVersion` + `kind` to the k8s-openapi type, or for `causeway.dev/v1alpha1`
///   IPPool to [`causeway_translate::IpPool`] (unknown `spec` fields are errors) (see [`Kind::from_api`]); kinds
///   Causeway does not use give a warning and are skipped.
/// - Defaults the API server would fill in are filled in (see [`crate::defaults`]).
///
/// A document that does not parse or decode gives one error diagnostic naming the file and the document index
/// (field `[N]`, or `[N].items[M]` inside a List; indexes count non-empty documents from 0) or, once its kind and
/// name are known, the object itself; every other document still yields its object. Never panics.
pub fn parse_manifests(file_name: &str, bytes: &[u8]) -> (Vec<KubeObject>, Vec<Diagnostic>) {
    let mut objects = Vec::new();
    let mut diags = Vec::new();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            diags.push(Diagnostic::error(
                file_ref(file_name),
                "",
                format!("the file is not UTF-8 text ({e}); it is skipped"),
            ));
            return (objects, diags);
        }
    };
    let mut documents: Vec<(String, Value)> = Vec::new();
    if file_name.ends_with(".json") {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        for (i, value) in stream.enumerate() {
            match value {
                Ok(v) => documents.push((format!("[{i}]"), v)),
                Err(e) => {
                    // A JSON syntax error ends the stream: nothing after it can be located reliably.
                    diags.push(Diagnostic::error(
                        file_ref(file_name),
                        format!("[{i}]"),
                        format!("invalid JSON: {e}; the rest of the file is skipped"),
                    ));
                    break;
                }
            }
        }
    } else {
        for (i, doc) in split_yaml_documents(text).into_iter().enumerate() {
            match serde_saphyr::from_str::<Value>(doc.text) {
                Ok(Value::Null) => {}
                Ok(v) => documents.push((format!("[{i}]"), v)),
                Err(e) => {
                    let e = e.without_snippet();
                    let at = match e.location() {
                        Some(loc) if loc.line() > 0 => format!(
                            "line {}, column {}",
                            doc.first_line + usize::try_from(loc.line()).unwrap_or(1) - 1,
                            loc.column()
                        ),
                        _ => format!("starting at line {}", doc.first_line),
                    };
                    diags.push(Diagnostic::error(
                        file_ref(file_name),
                        format!("[{i}]"),
                        format!(
                            "invalid YAML in document {i} ({at}): {}; the document is skipped",
                            yaml_message(&e.to_string())
                        ),
                    ));
                }
            }
        }
    }
    for (field, value) in documents {
        decode(file_name, &field, value, &mut objects, &mut diags, 0);
    }
    (objects, diags)
}

/// The first line of a YAML error without its document-relative " at line N, column M" suffix (the caller
/// reports the position in the file instead).
fn yaml_message(s: &str) -> &str {
    let first = s.lines().next().unwrap_or(s).trim();
    match first.rfind(" at line ") {
        Some(i) if first[i..].contains(", column ") => &first[..i],
        _ => first,
    }
}

/// One YAML document of a stream and the 1-based line it starts on.
struct YamlDoc<'a> {
    first_line: usize,
    text: &'a str,
}

/// Split a YAML stream at its document markers.
///
/// A `---` at the start of a line always starts a new document (YAML 1.2 forbids it inside content), and `...`
/// ends one, so splitting lines is exact and lets a syntax error in one document leave the others readable.
/// Documents holding only blanks and comments are dropped.
fn split_yaml_documents(text: &str) -> Vec<YamlDoc<'_>> {
    fn push<'a>(docs: &mut Vec<YamlDoc<'a>>, text: &'a str, from: usize, to: usize, line: usize) {
        let body = &text[from..to];
        let has_content = body.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        if has_content {
            docs.push(YamlDoc { first_line: line, text: body });
        }
    }
    let mut docs = Vec::new();
    let mut start = 0usize; // byte offset of the current document
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let content = line.trim_end_matches(['\n', '\r']);
        let is_start = content == "---" || content.starts_with("--- ") || content.starts_with("---\t");
        let is_end = content == "..." || content.starts_with("... ");
        if is_start || is_end {
            push(&mut docs, text, start, offset, start_line);
            if is_start {
                // Content after `--- ` on the same line belongs to the new document.
                start = offset + 3;
                start_line = n + 1;
            } else {
                start = offset + line.len();
                start_line = n + 2;
            }
        }
        offset += line.len();
    }
    push(&mut docs, text, start, text.len(), start_line);
    docs
}

fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// Decode one document (or List item) into an object, with defaults.
fn decode(
    file: &str,
    field: &str,
    mut value: Value,
    objects: &mut Vec<KubeObject>,
    diags: &mut Vec<Diagnostic>,
    depth: usize,
) {
    let here = |msg: String| Diagnostic::error(file_ref(file), field.to_owned(), msg);
    if !value.is_object() {
        diags.push(here(format!("the document is not a mapping (found {}); it is skipped", type_name(&value))));
        return;
    }
    let api_version = str_field(&value, "apiVersion").unwrap_or("").to_owned();
    let kind_name = str_field(&value, "kind").unwrap_or("").to_owned();
    if api_version.is_empty() || kind_name.is_empty() {
        diags.push(here("the document has no apiVersion or no kind; it is skipped".to_owned()));
        return;
    }
    if kind_name.ends_with("List") && value.get("items").is_some() {
        if depth > 0 {
            diags.push(here("a List inside a List is not supported; it is skipped".to_owned()));
            return;
        }
        let items = match value.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            Some(Value::Null) => Vec::new(),
            _ => {
                diags.push(Diagnostic::error(
                    file_ref(file),
                    format!("{field}.items"),
                    "items is not an array; the List is skipped",
                ));
                return;
            }
        };
        for (i, item) in items.into_iter().enumerate() {
            decode(file, &format!("{field}.items[{i}]"), item, objects, diags, depth + 1);
        }
        return;
    }
    let Some(kind) = Kind::from_api(&api_version, &kind_name) else {
        // A kind we read, in an apiVersion we do not (say `extensions/v1beta1` Ingress), is surely a mistake; any
        // other kind (a Deployment next to the Services) is merely not ours.
        let diag = match Kind::ALL.into_iter().find(|k| k.as_str() == kind_name) {
            Some(known) => Diagnostic::error(
                file_ref(file),
                format!("{field}.apiVersion"),
                format!(
                    "{kind_name} {api_version} is not supported (use {}); the document is skipped",
                    known.api_version()
                ),
            ),
            None => Diagnostic::warning(
                file_ref(file),
                field.to_owned(),
                format!("{kind_name} ({api_version}) is not a kind causeway reads; the document is ignored"),
            ),
        };
        diags.push(diag);
        return;
    };
    let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned();
    if name.is_empty() {
        diags
            .push(here(format!("the {kind_name} has no metadata.name (generateName is not supported); it is skipped")));
        return;
    }
    defaults::prepare_value(kind, &mut value);
    let namespace = match value.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && kind.is_namespaced() => ns.to_owned(),
        _ if kind.is_namespaced() => defaults::DEFAULT_NAMESPACE.to_owned(),
        _ => String::new(),
    };
    let obj_ref = ObjectRef::new(kind.as_str(), namespace, name);
    let decoded = match kind {
        Kind::Namespace => typed::<Namespace>(value).map(KubeObject::from),
        Kind::Service => typed::<Service>(value).map(|mut o| {
            defaults::service(&mut o);
            KubeObject::from(o)
        }),
        Kind::Secret => typed::<Secret>(value).map(|mut o| {
            defaults::secret(&mut o);
            KubeObject::from(o)
        }),
        Kind::Node => typed::<Node>(value).map(KubeObject::from),
        Kind::ConfigMap => typed::<ConfigMap>(value).map(KubeObject::from),
        Kind::Ingress => typed::<Ingress>(value).map(KubeObject::from),
        Kind::IngressClass => typed::<IngressClass>(value).map(KubeObject::from),
        Kind::EndpointSlice => typed::<EndpointSlice>(value).map(|mut o| {
            defaults::endpoint_slice(&mut o);
            KubeObject::from(o)
        }),
        Kind::IpPool => typed::<IpPool>(value).map(KubeObject::from),
    };
    match decoded {
        Ok(obj) => objects.push(defaults::namespace(obj)),
        Err(e) => diags.push(Diagnostic::error(
            obj_ref,
            e.path,
            format!("{} (in {file} document {field}); the object is skipped", e.message),
        )),
    }
}

/// A decode failure: the field path (`spec.ports[0].port`, empty at the top) and what is wrong.
struct DecodeError {
    path: String,
    message: String,
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        DecodeError { path, message: e.into_inner().to_string() }
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_split_at_markers_only() {
        let text = "# header\n---\na: 1\n---\n# only a comment\n--- \nb: |\n  ---x\n  y\n...\n---\nc: 3";
        let docs = split_yaml_documents(text);
        let bodies: Vec<&str> = docs.iter().map(|d| d.text.trim()).collect();
        assert_eq!(bodies, ["a: 1", "b: |\n  ---x\n  y", "c: 3"]);
        assert_eq!(docs.iter().map(|d| d.first_line).collect::<Vec<_>>(), [2, 6, 11]);
    }

    #[test]
    fn a_document_without_markers_is_one_document() {
        let docs = split_yaml_documents("a: 1\nb: 2\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].first_line, 1);
        assert!(split_yaml_documents("").is_empty());
        assert!(split_yaml_documents("---\n---\n# x\n").is_empty());
    }
}
