//! The tenancy store against DynamoDB Local: an identity has one owner, a
//! claim is one conditional write, and only the owner can let go.

use std::sync::Arc;

use shared::store::tenancy::{Claim, Kind, TenancyStore};

use crate::support::Stack;

#[tokio::test]
async fn claim_owner_release_and_list() {
    let stack = Stack::start().await;
    let store = stack.tenancy();
    let number = Kind::Voice.key("+14155550100");

    assert_eq!(store.owner(&number).await.unwrap(), None);
    assert_eq!(store.claim(&number, "acme").await.unwrap(), Claim::Claimed);
    assert_eq!(
        store.claim(&number, "acme").await.unwrap(),
        Claim::AlreadyOurs
    );
    assert_eq!(
        store.claim(&number, "globex").await.unwrap(),
        Claim::TakenBy
    );
    assert_eq!(store.owner(&number).await.unwrap().as_deref(), Some("acme"));

    // Other kinds and other organisations stay out of a listing.
    let whatsapp = Kind::WhatsApp.key("+14155550100");
    let second = Kind::Voice.key("+14155550101");
    assert_eq!(
        store.claim(&whatsapp, "acme").await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(store.claim(&second, "acme").await.unwrap(), Claim::Claimed);
    let theirs = Kind::Voice.key("+14155550199");
    assert_eq!(
        store.claim(&theirs, "globex").await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        store.list("acme", Kind::Voice.prefix()).await.unwrap(),
        vec![number.clone(), second.clone()]
    );
    assert_eq!(
        store.list("acme", Kind::WhatsApp.prefix()).await.unwrap(),
        vec![whatsapp.clone()]
    );
    assert_eq!(
        store.list("globex", Kind::Voice.prefix()).await.unwrap(),
        vec![theirs.clone()]
    );
    assert!(store
        .list("initech", Kind::Voice.prefix())
        .await
        .unwrap()
        .is_empty());

    // Only the owner releases; a second release finds nothing.
    assert!(!store.release(&number, "globex").await.unwrap());
    assert_eq!(store.owner(&number).await.unwrap().as_deref(), Some("acme"));
    assert!(store.release(&number, "acme").await.unwrap());
    assert!(!store.release(&number, "acme").await.unwrap());
    assert_eq!(store.owner(&number).await.unwrap(), None);
    assert_eq!(
        store.list("acme", Kind::Voice.prefix()).await.unwrap(),
        vec![second]
    );
    // Released, the number is free for anyone.
    assert_eq!(
        store.claim(&number, "globex").await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        store.owner(&number).await.unwrap().as_deref(),
        Some("globex")
    );
}

#[tokio::test]
async fn a_repeated_claim_keeps_the_first_claim_time() {
    let stack = Stack::start().await;
    let store = stack.tenancy();
    let key = Kind::Twilio.key("AC0123");
    let created_at = || async {
        stack
            .harness_dynamo
            .get_item()
            .table_name(stack.resources.table("TenancyTable"))
            .key(
                "key",
                aws_sdk_dynamodb::types::AttributeValue::S(key.clone()),
            )
            .send()
            .await
            .unwrap()
            .item
            .unwrap()["created_at"]
            .clone()
    };
    assert_eq!(store.claim(&key, "acme").await.unwrap(), Claim::Claimed);
    let first = created_at().await;
    // Rewrite the stored time so a second claim that overwrote it would show.
    stack
        .harness_dynamo
        .update_item()
        .table_name(stack.resources.table("TenancyTable"))
        .key(
            "key",
            aws_sdk_dynamodb::types::AttributeValue::S(key.clone()),
        )
        .update_expression("SET created_at = :t")
        .expression_attribute_values(":t", aws_sdk_dynamodb::types::AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    assert_ne!(first.as_n().unwrap(), "1");
    assert_eq!(store.claim(&key, "acme").await.unwrap(), Claim::AlreadyOurs);
    assert_eq!(created_at().await.as_n().unwrap(), "1");
}

#[tokio::test]
async fn two_organisations_claiming_at_once_get_one_winner() {
    let stack = Stack::start().await;
    let store: Arc<dyn TenancyStore> = Arc::new(stack.tenancy());
    for round in 0..5 {
        let key = Kind::Voice.key(&format!("+1415555020{round}"));
        let claims = ["acme", "globex"].map(|org| {
            let store = Arc::clone(&store);
            let key = key.clone();
            tokio::spawn(async move { (org, store.claim(&key, org).await.unwrap()) })
        });
        let mut winners = Vec::new();
        for claim in claims {
            let (org, outcome) = claim.await.unwrap();
            match outcome {
                Claim::Claimed => winners.push(org),
                Claim::TakenBy => {}
                Claim::AlreadyOurs => panic!("{org} never claimed {key} before"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(
            store.owner(&key).await.unwrap().as_deref(),
            Some(winners[0])
        );
    }
}

#[tokio::test]
async fn unbounded_keys_never_reach_the_table() {
    let stack = Stack::start().await;
    let store = stack.tenancy();
    let long = Kind::Voice.key(&"9".repeat(600));
    assert!(store.claim(&long, "acme").await.is_err());
    assert!(store.owner("").await.is_err());
    assert!(store.release(&long, "acme").await.is_err());
    assert!(store.list("", Kind::Voice.prefix()).await.is_err());
    assert_eq!(stack.item_count("TenancyTable").await, 0);
}
