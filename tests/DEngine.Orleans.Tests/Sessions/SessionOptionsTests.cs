namespace DEngine.Orleans.Tests.Sessions;

/// <summary>The session options' validation names the key and the bound.</summary>
public sealed class SessionOptionsTests
{
    [Fact]
    public void A_tombstone_retention_not_longer_than_the_client_retry_deadline_is_refused_naming_the_key()
    {
        var problem = new DEngineOptions { SessionTombstoneRetention = ClientRetryDeadline.Default }.Validate();

        Assert.NotNull(problem);
        Assert.StartsWith("DEngine:SessionTombstoneRetention", problem);
        Assert.Null(new DEngineOptions { SessionTombstoneRetention = ClientRetryDeadline.Default + TimeSpan.FromSeconds(1) }.Validate());
    }

    [Fact]
    public void A_session_timeout_not_longer_than_the_client_retry_deadline_is_refused_naming_the_key()
    {
        var problem = new DEngineOptions { SessionTimeout = TimeSpan.FromSeconds(10) }.Validate();

        Assert.NotNull(problem);
        Assert.StartsWith("DEngine:SessionTimeout", problem);
    }
}
