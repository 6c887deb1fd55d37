using System.Collections.Concurrent;
using System.Text;
using DEngine.Client;

namespace DEngine.Cluster.Tests;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class LocalClusterCollection : ICollectionFixture<LocalClusterFixture>
{
    public const string Name = "local-cluster";
}

/// <summary>
/// The issue's reproduction of README's three-local-silo example: 48 keys, then the loss of a
/// non-primary silo. Every acknowledged key must always be served with its value or answered
/// retryably, never read as absent, and all must be served again once the silo is back.
/// </summary>
[Collection(LocalClusterCollection.Name)]
public sealed class ReadmeScenarioTests(LocalClusterFixture cluster)
{
    private const int KeyCount = 48;
    private static readonly TimeSpan Phase = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Readme_cluster_keeps_every_key_served_or_retryable_through_a_graceful_stop_of_a_non_primary_silo_and_serves_all_once_it_is_back()
    {
        await cluster.EnsureAllRunningAsync();
        var keys = await WriteKeysAsync("stop");
        var seen = new Observations();

        var stop = cluster.StopSiloGracefullyAsync(1);
        while (!stop.IsCompleted)
        {
            await seen.PassAsync(cluster.Client, keys);
        }
        await stop;
        await seen.UntilSettledAsync(cluster.Client, keys, Phase);
        await cluster.StartSiloAsync(1);
        await seen.UntilAllServedAsync(cluster.Client, keys, Phase);

        seen.AssertNeverAbsentOrWrong();
    }

    [Fact]
    public async Task Readme_cluster_keeps_every_key_served_or_retryable_through_a_kill_9_of_a_non_primary_silo_and_serves_all_once_it_is_back()
    {
        await cluster.EnsureAllRunningAsync();
        var keys = await WriteKeysAsync("kill");
        var seen = new Observations();

        cluster.KillSilo(2);
        // Until the cluster has declared it dead and every partition answers from the other silos.
        await seen.UntilSettledAsync(cluster.Client, keys, Phase);
        await cluster.StartSiloAsync(2);
        await seen.UntilAllServedAsync(cluster.Client, keys, Phase);

        seen.AssertNeverAbsentOrWrong();
    }

    private async Task<Dictionary<string, string>> WriteKeysAsync(string phase)
    {
        var keys = Enumerable.Range(0, KeyCount).ToDictionary(i => $"readme-{phase}-{i}", i => $"value-{i}");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        foreach (var (key, value) in keys)
        {
            while (true)
            {
                try
                {
                    await cluster.PatientClient.PutAsync(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes(value));
                    break;
                }
                catch (TimeoutException) when (DateTime.UtcNow < deadline)
                {
                    // A first activation on a loaded machine can outlast the client's 5 s response
                    // timeout; the same Put again is idempotent. Only an answered Put counts as acknowledged.
                }
            }
        }
        return keys;
    }

    /// <summary>What every read of the acknowledged keys answered, pass after pass.</summary>
    private sealed class Observations
    {
        private readonly ConcurrentQueue<string> _absentOrWrong = new();
        private readonly ConcurrentQueue<string> _unexpected = new();
        private int _passes;
        private long _retryable;
        private long _transport;

        /// <summary>Reads every key once (concurrently); returns how many were served and whether any call failed in transport.</summary>
        public async Task<(int Served, bool TransportError)> PassAsync(DEngineClient client, Dictionary<string, string> keys)
        {
            _passes++;
            var served = 0;
            var transport = false;
            await Task.WhenAll(keys.Select(async pair =>
            {
                try
                {
                    var value = await client.GetAsync(Encoding.UTF8.GetBytes(pair.Key));
                    if (value is null)
                    {
                        _absentOrWrong.Enqueue($"{pair.Key} absent (pass {_passes})");
                    }
                    else if (Encoding.UTF8.GetString(value) != pair.Value)
                    {
                        _absentOrWrong.Enqueue($"{pair.Key} = '{Encoding.UTF8.GetString(value)}' (pass {_passes})");
                    }
                    else
                    {
                        Interlocked.Increment(ref served);
                    }
                }
                catch (DEngineException ex) when (ex.IsRetryable)
                {
                    Interlocked.Increment(ref _retryable);
                }
                catch (Exception ex) when (ex is global::Orleans.Runtime.OrleansException or TimeoutException)
                {
                    // A read through or to the lost silo before the cluster noticed: retryable for a read.
                    Interlocked.Increment(ref _transport);
                    transport = true;
                }
                catch (Exception ex)
                {
                    _unexpected.Enqueue($"{pair.Key}: {ex.GetType().Name}: {ex.Message}");
                }
            }));
            return (served, transport);
        }

        /// <summary>Reads until three passes in a row ended without a transport error (the cluster has noticed the loss).</summary>
        public async Task UntilSettledAsync(DEngineClient client, Dictionary<string, string> keys, TimeSpan timeout)
        {
            var deadline = DateTime.UtcNow + timeout;
            var settled = 0;
            while (settled < 3)
            {
                Assert.True(DateTime.UtcNow < deadline, $"the reads did not settle within {timeout} ({Summary})");
                settled = (await PassAsync(client, keys)).TransportError ? 0 : settled + 1;
                await Task.Delay(200);
            }
        }

        /// <summary>Reads until one pass served every key.</summary>
        public async Task UntilAllServedAsync(DEngineClient client, Dictionary<string, string> keys, TimeSpan timeout)
        {
            var deadline = DateTime.UtcNow + timeout;
            while ((await PassAsync(client, keys)).Served < keys.Count)
            {
                Assert.True(DateTime.UtcNow < deadline, $"not every key was served again within {timeout} ({Summary})");
                await Task.Delay(200);
            }
        }

        public void AssertNeverAbsentOrWrong()
        {
            Assert.True(_absentOrWrong.IsEmpty, $"{_absentOrWrong.Count} reads of acknowledged keys were absent or wrong, e.g. {string.Join("; ", _absentOrWrong.Take(8))} ({Summary})");
            Assert.True(_unexpected.IsEmpty, $"unexpected errors: {string.Join("; ", _unexpected.Take(5))}");
        }

        private string Summary => $"{_passes} passes, {_retryable} retryable answers, {_transport} transport errors, {_absentOrWrong.Count} absent or wrong";
    }
}
