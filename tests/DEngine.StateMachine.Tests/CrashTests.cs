using System.Globalization;
using DEngine.CrashChild;
using DEngine.Protos.Client;
using DEngine.Protos.Common;
using DEngine.StateMachine.Tests.Support;
using Microsoft.Extensions.Time.Testing;
using Xunit.Abstractions;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>
/// Crash safety with a real process: the child applies synced chunks and acknowledges each on stdout;
/// the test SIGKILLs it at random moments and checks, after every reopen, that each acknowledged
/// chunk is there and that the stored applied position describes the data exactly.
/// </summary>
public sealed class CrashTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Every_acknowledged_chunk_survives_SIGKILL_and_the_applied_position_matches_the_data_exactly()
    {
        using var directory = new TempDirectory();
        var path = directory.Sub("db");
        var seed = Environment.TickCount;
        var random = new Random(seed);
        output.WriteLine($"kill schedule seed {seed}");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        var model = new MixedWorkloadModel();
        const int cycles = 24;

        for (var cycle = 0; cycle < cycles; cycle++)
        {
            var acksWanted = random.Next(1, 201);
            ulong lastAcked;
            await using (var child = ChildProcess.Start("mixed", path))
            {
                // The child continues from exactly where the last verification found the database.
                Assert.Equal($"start {model.AppliedIndex}", await child.ReadLineAsync(deadline));
                lastAcked = model.AppliedIndex;
                for (var n = 0; n < acksWanted; n++)
                {
                    var ack = ulong.Parse(await child.ReadLineAsync(deadline), CultureInfo.InvariantCulture);
                    Assert.True(ack > lastAcked, $"acks must increase: {ack} after {lastAcked}");
                    lastAcked = ack;
                }
                await child.KillAsync(deadline);
            }

            using var machine = new RocksDbStateMachine(path, SmallOptions(TimeProvider.System));
            var applied = machine.LastApplied;
            output.WriteLine($"cycle {cycle}: killed after {acksWanted} acks, last acked {lastAcked}, reopened at {applied}");
            Assert.True(applied.Index >= lastAcked, $"cycle {cycle}: acknowledged index {lastAcked} lost, reopened at {applied}");

            model.AdvanceTo(applied.Index);
            Assert.Equal(new LogPosition(model.AppliedIndex, model.AppliedTerm), applied);
            var scan = machine.ScanPrefix(Utf8(CrashWorkload.KeyPrefix));
            Assert.Equal(applied.Index, scan.Revision);
            Assert.Equal(
                model.Contents.Select(kv => $"{kv.Key}={kv.Value}"),
                scan.Entries.Select(e => $"{Text(e.Key)}={Text(e.Value)}"));
            Assert.Equal(model.Contents.Count, machine.Count());
        }
    }

    [Fact]
    public async Task A_session_write_acknowledged_before_SIGKILL_and_sent_again_after_the_reopen_is_answered_from_the_table_not_applied_twice()
    {
        using var directory = new TempDirectory();
        var path = directory.Sub("db");
        var seed = Environment.TickCount;
        var random = new Random(seed);
        output.WriteLine($"kill schedule seed {seed}");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        ulong applied = 0;
        for (var cycle = 0; cycle < 6; cycle++)
        {
            var acksWanted = random.Next(1, 60);
            ulong lastAcked = 0;
            await using (var child = ChildProcess.Start("session", path))
            {
                Assert.Equal($"start {applied}", await child.ReadLineAsync(deadline));
                for (var n = 0; n < acksWanted; n++)
                {
                    lastAcked = ulong.Parse(await child.ReadLineAsync(deadline), CultureInfo.InvariantCulture);
                }
                await child.KillAsync(deadline);
            }

            using var machine = new RocksDbStateMachine(path, SmallOptions(TimeProvider.System));
            applied = machine.LastApplied.Index;
            output.WriteLine($"cycle {cycle}: last acked {lastAcked}, reopened at {applied}");
            Assert.True(applied >= lastAcked, $"cycle {cycle}: acknowledged index {lastAcked} lost, reopened at {applied}");
            Assert.True(machine.HasSession(CrashWorkload.SessionId.Span), "the session's record did not survive the kill");

            // The client, not having heard its answers, sends its last writes again (a retry is a new
            // log entry): each is answered with the first apply's index and status, nothing is written.
            var before = machine.ScanPrefix(Utf8(CrashWorkload.SessionPrefix)).Entries.Select(e => $"{Text(e.Key)}={Text(e.Value)}").ToArray();
            var retried = Enumerable.Range(0, 4).Select(i => applied - (ulong)i).Where(s => s >= 1 && s + CrashWorkload.SessionWindow > applied).ToArray();
            var retries = retried.Select((sequence, i) => CrashWorkload.Entry(applied + 1 + (ulong)i, 1, CrashWorkload.SessionCommand(sequence))).ToArray();
            var results = machine.ApplyChunk(retries);
            for (var i = 0; i < retried.Length; i++)
            {
                Assert.True(results[i].Deduplicated, $"cycle {cycle}: the retry of sequence {retried[i]} was applied again ({results[i].Status})");
                Assert.Equal(retried[i], results[i].RecordedIndex);
                if (cycle == 0)
                {
                    // Before any retry every CAS of the chain matched: the recorded answer is "applied", not a failed comparison.
                    Assert.Equal(ApplyStatus.Applied, results[i].Status);
                }
            }
            Assert.Equal(before, machine.ScanPrefix(Utf8(CrashWorkload.SessionPrefix)).Entries.Select(e => $"{Text(e.Key)}={Text(e.Value)}").ToArray());
            // The retries took log indexes: the child's next chunk starts after them.
            applied = machine.LastApplied.Index;
        }
    }

    [Fact]
    public async Task Stamped_ttl_keys_survive_SIGKILL_vanish_at_once_after_their_expiry_and_ExpireKeys_removes_them()
    {
        using var directory = new TempDirectory();
        var path = directory.Sub("db");
        var clock = (ulong)DefaultStart.ToUnixTimeMilliseconds();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        var acksWanted = new Random().Next(20, 201);

        ulong lastAcked = 0;
        await using (var child = ChildProcess.Start("ttl", path, clock.ToString(CultureInfo.InvariantCulture)))
        {
            Assert.Equal("start 0", await child.ReadLineAsync(deadline));
            for (var n = 0; n < acksWanted; n++)
            {
                lastAcked = ulong.Parse(await child.ReadLineAsync(deadline), CultureInfo.InvariantCulture);
            }
            await child.KillAsync(deadline);
        }

        var fake = new FakeTimeProvider(DefaultStart);
        var machine = new RocksDbStateMachine(path, SmallOptions(fake));
        try
        {
            var applied = machine.LastApplied.Index;
            Assert.True(applied >= lastAcked, $"acknowledged index {lastAcked} lost, reopened at {applied}");
            Assert.Equal(0UL, applied % 2); // two entries per chunk: never a torn chunk
            var firstIndexes = Enumerable.Range(0, (int)(applied / 2)).Select(i => (ulong)(2 * i) + 1).ToArray();

            // Before the expiry: every TTL key is there with exactly its stamped expiry.
            foreach (var first in firstIndexes)
            {
                Assert.True(machine.TryGetExpiry(Utf8(CrashWorkload.TtlKey(first)), out var expiry), $"{CrashWorkload.TtlKey(first)} missing");
                Assert.Equal(CrashWorkload.TtlExpiry(first, clock), expiry);
            }

            // Past every expiry: invisible at once, without any cleanup having run.
            fake.Advance(TimeSpan.FromSeconds(30));
            Assert.Empty(machine.ScanPrefix(Utf8(CrashWorkload.TtlPrefix)).Entries);
            Assert.All(firstIndexes, first => Assert.Null(machine.Get(Utf8(CrashWorkload.TtlKey(first)))));
            Assert.Equal(
                firstIndexes.Select(CrashWorkload.KeepKey),
                machine.ScanPrefix(Utf8(CrashWorkload.KeepPrefix)).Entries.Select(e => Text(e.Key)));

            var now = (ulong)fake.GetUtcNow().ToUnixTimeMilliseconds();
            var planned = machine.FindExpired(now, int.MaxValue);
            Assert.Equal(firstIndexes.Select(CrashWorkload.TtlKey).Order(), planned.Select(p => Text(p.Key)).Order());
            var results = machine.ApplyChunk([Log.ExpireKeys(applied + 1, now, planned)]);
            Assert.Equal(firstIndexes.Length, results[0].KeysExpired);
            Assert.Null(machine.EarliestExpiry());
        }
        finally
        {
            machine.Dispose();
        }

        // Physically gone: the data family holds only the plain keys, the TTL index nothing.
        Assert.All(RawDatabase.ReadFamily(path, RocksDbStateMachine.DataFamily), e => Assert.StartsWith(CrashWorkload.KeepPrefix, Text(e.Key)));
        Assert.Empty(RawDatabase.ReadFamily(path, RocksDbStateMachine.TtlFamily));
    }

    /// <summary>The mixed workload replayed on a sorted dictionary, with the documented CAS semantics.</summary>
    internal sealed class MixedWorkloadModel
    {
        private readonly SortedDictionary<string, string> _contents = new(StringComparer.Ordinal);

        public ulong AppliedIndex { get; private set; }

        public ulong AppliedTerm { get; private set; }

        public IReadOnlyDictionary<string, string> Contents => _contents;

        /// <summary>Applies whole chunks until <paramref name="index"/>, which must end a chunk.</summary>
        public void AdvanceTo(ulong index)
        {
            while (AppliedIndex < index)
            {
                foreach (var entry in CrashWorkload.MixedChunk(AppliedIndex + 1))
                {
                    Apply(WriteCommand.Parser.ParseFrom(entry.Payload.Command));
                    AppliedIndex = entry.Index;
                    AppliedTerm = entry.Term;
                }
            }
            Assert.True(AppliedIndex == index, $"applied index {index} is not the end of a chunk (the chunk around it ends at {AppliedIndex}): a chunk was torn");
        }

        private void Apply(WriteCommand command)
        {
            switch (command.OperationCase)
            {
                case WriteCommand.OperationOneofCase.Insert:
                    _contents[command.Insert.Key.ToStringUtf8()] = command.Insert.Value.ToStringUtf8();
                    break;
                case WriteCommand.OperationOneofCase.Delete:
                    _contents.Remove(command.Delete.Key.ToStringUtf8());
                    break;
                case WriteCommand.OperationOneofCase.CompareAndSwap:
                    var cas = command.CompareAndSwap;
                    var key = cas.Key.ToStringUtf8();
                    var exists = _contents.TryGetValue(key, out var current);
                    var matches = cas.HasExpectedValue ? exists && current == cas.ExpectedValue.ToStringUtf8() : !exists;
                    if (matches)
                    {
                        _contents[key] = cas.NewValue.ToStringUtf8();
                    }
                    break;
                default:
                    throw new InvalidOperationException($"the mixed workload has no {command.OperationCase}");
            }
        }
    }
}
