//! Start-up permission check: asks the API server (SelfSubjectAccessReview) for every verb and resource the
//! controller will use, and fails with one error naming all that are missing, instead of a watcher that
//! retries a 403 forever.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::error::{Access, Error, Result};

/// Checks every permission in `needed` and returns [`Error::Forbidden`] listing the denied ones.
pub async fn check_access(client: &Client, needed: &[Access]) -> Result<()> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for access in needed {
        let (resource, subresource) = match access.resource.split_once('/') {
            Some((resource, sub)) => (resource, Some(sub.to_owned())),
            None => (access.resource, None),
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(access.verb.to_owned()),
                    group: Some(access.group.to_owned()),
                    resource: Some(resource.to_owned()),
                    subresource,
                    namespace: access.namespace.clone(),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Error::api(format!("access review for {access}"), e))?;
        if !answer.status.is_some_and(|s| s.allowed) {
            missing.push(access.clone());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Forbidden { user: whoami(client).await, missing })
}

/// The user name the API server authenticated us as, for the error message.
async fn whoami(client: &Client) -> String {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = SelfSubjectReview::default();
    match reviews.create(&PostParams::default(), &review).await {
        Ok(r) => r
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .map_or_else(|| "this client".to_owned(), |u| format!("user {u:?}")),
        Err(_) => "this client".to_owned(),
    }
}
