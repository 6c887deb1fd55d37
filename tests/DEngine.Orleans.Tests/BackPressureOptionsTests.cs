namespace DEngine.Orleans.Tests;

public sealed class BackPressureOptionsTests
{
    public static TheoryData<string, Action<DEngineOptions>> BadValues => new()
    {
        { "DEngine:MaxQueuedWrites", o => o.MaxQueuedWrites = 0 },
        { "DEngine:MaxQueuedBytes", o => o.MaxQueuedBytes = 10 },
        { "DEngine:MaxChunkBytes", o => o.MaxChunkBytes = 0 },
        { "DEngine:MaxClockSkew", o => o.MaxClockSkew = TimeSpan.FromSeconds(-1) },
    };

    [Theory]
    [MemberData(nameof(BadValues))]
    public void Invalid_queue_chunk_and_clock_skew_options_are_rejected_naming_the_key(string key, Action<DEngineOptions> configure)
    {
        var options = new DEngineOptions();
        configure(options);

        var problem = options.Validate();

        Assert.NotNull(problem);
        Assert.StartsWith(key + " ", problem);
    }

    [Fact]
    public void The_defaults_bound_the_queue_and_the_chunk_and_allow_five_seconds_of_clock_skew()
    {
        var options = new DEngineOptions();

        Assert.Null(options.Validate());
        Assert.Equal(16_384, options.MaxQueuedWrites);
        Assert.Equal(64L << 20, options.MaxQueuedBytes);
        Assert.Equal(16L << 20, options.MaxChunkBytes);
        Assert.Equal(TimeSpan.FromSeconds(5), options.MaxClockSkew);
    }
}
