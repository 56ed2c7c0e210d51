//! Diagnostics: what translation could not use, and why.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A reference to the Kubernetes object (or manifests file) a diagnostic or table entry came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// `Ingress`, `Service`, `Secret`, `EndpointSlice`, `Node`, `IngressClass`, or `File` for a manifests file.
    pub kind: String,
    /// Empty for cluster-scoped objects and files.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The object's name, or the file's path for `File`.
    pub name: String,
}

impl ObjectRef {
    /// A reference to a namespaced object.
    pub fn new(kind: impl Into<String>, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { kind: kind.into(), namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something was left out of the table.
    Error,
    /// Everything was kept, but the result may not be what the author meant (for example a route conflict).
    Warning,
}

/// One problem found while translating objects into tables. The object is left out (or partly left out);
/// everything else keeps serving.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The object concerned.
    pub object: ObjectRef,
    /// The field concerned, as a JSON path such as `spec.rules[0].http.paths[1].path`.
    pub field: String,
    /// A sentence saying what is wrong.
    pub message: String,
}

impl Diagnostic {
    /// An error: the object (or the named part of it) was left out.
    pub fn error(object: ObjectRef, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { severity: Severity::Error, object, field: field.into(), message: message.into() }
    }

    /// A warning: kept, but worth a look.
    pub fn warning(object: ObjectRef, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, object, field: field.into(), message: message.into() }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.message)
    }
}
