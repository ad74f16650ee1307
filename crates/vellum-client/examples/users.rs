//! Manage users: an Entra (token) user by object id, a certificate user by fingerprint.

mod common;

use vellum_client::LedgerUserRole;

#[tokio::main]
async fn main() -> vellum_client::Result<()> {
    let client = common::admin_client()?;
    let user_id = "some AAD object id";
    let user = client
        .create_or_update_user(user_id, LedgerUserRole::Contributor, None)
        .await?;
    assert_eq!(user.role, LedgerUserRole::Contributor);
    let user = client.get_user(user_id, None).await?;
    assert_eq!(user.id, user_id);
    client.delete_user(user_id, None).await?;

    // A certificate user is identified by its certificate's fingerprint.
    let fingerprint = "7F:75:58:60:70:34:01:EF:B0:70:21:8D:E5:4B:6A:64:D4:0D:BA:87:85:1E:3F:DB:25:B1:02:4C:AF:1D:30:1F";
    client
        .create_or_update_user(fingerprint, LedgerUserRole::Reader, None)
        .await?;
    for u in client.list_users(None).await? {
        println!("{} {}", u.id, u.role);
    }
    client.delete_user(fingerprint, None).await?;
    Ok(())
}
