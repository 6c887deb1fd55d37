using System.Net;

namespace DEngine.Cli.Tests;

/// <summary>
/// A silo started as README's Dashboard section says (<c>--environment Development
/// --DEngine:Replication:Factor 1</c>), on a free dashboard port instead of 8080 so the test never
/// meets another process on it.
/// </summary>
public sealed class DevelopmentSiloFixture : SiloFixture
{
    /// <summary>The dashboard's port.</summary>
    public int DashboardPort { get; } = FreePort();

    /// <inheritdoc />
    protected override IEnumerable<string> DashboardArgs => ["--environment", "Development", "--dashboard-port", DashboardPort.ToString(System.Globalization.CultureInfo.InvariantCulture)];
}

/// <summary>The Orleans Dashboard of a Development silo starts and answers HTTP.</summary>
public sealed class DashboardTests(DevelopmentSiloFixture silo) : IClassFixture<DevelopmentSiloFixture>
{
    [Fact]
    public async Task A_silo_in_the_Development_environment_serves_the_dashboard_page_over_HTTP()
    {
        var url = $"http://127.0.0.1:{silo.DashboardPort}/";
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        // The silo prints the dashboard's address right after "ready" (the fixture reads its output
        // in the background); Kestrel is listening by then, but allow for a slow first request.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!silo.Log().Contains($"Dashboard: {url}", StringComparison.Ordinal))
        {
            Assert.True(DateTime.UtcNow < deadline, $"the silo did not print the dashboard's address:\n{silo.Log()}");
            await Task.Delay(100);
        }
        HttpResponseMessage? response = null;
        while (response is null)
        {
            try
            {
                response = await http.GetAsync(url);
            }
            catch (HttpRequestException) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(200);
            }
        }
        using (response)
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var body = await response.Content.ReadAsStringAsync();
            Assert.Contains("<html", body, StringComparison.OrdinalIgnoreCase);
        }
        // The silo it belongs to serves: the dashboard runs beside the partitions, not instead of them.
        var put = await silo.CliAsync("put", "dashboard-key", "v");
        Assert.True(put.ExitCode == 0, put.ToString());
    }
}
