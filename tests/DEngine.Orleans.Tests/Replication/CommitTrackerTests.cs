using DEngine.Orleans.Replication;
using Microsoft.Extensions.Time.Testing;

namespace DEngine.Orleans.Tests.Replication;

/// <summary>The primary's commit rule, read lease and removal timeout, on a fake clock.</summary>
public sealed class CommitTrackerTests
{
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(4);
    private readonly FakeTimeProvider _time = new();

    private CommitTracker Tracker(params string[] replicas) => new("p", ["p", .. replicas], 0, Lease, _time);

    [Fact]
    public void An_index_is_committed_only_once_every_replica_the_primary_included_holds_it()
    {
        var tracker = Tracker("a", "b");
        var sent = _time.GetTimestamp();
        tracker.Acknowledged("a", 5, sent);
        tracker.Acknowledged("b", 7, sent);
        Assert.Equal(0ul, tracker.CommitIndex); // the primary's own log has nothing durable yet
        Assert.True(tracker.LocalDurable(9));
        Assert.Equal(5ul, tracker.CommitIndex);
        tracker.Acknowledged("a", 8, sent);
        Assert.Equal(7ul, tracker.CommitIndex);
    }

    [Fact]
    public void The_commit_index_never_goes_back()
    {
        var tracker = Tracker("a");
        tracker.LocalDurable(5);
        tracker.Acknowledged("a", 5, _time.GetTimestamp());
        tracker.Acknowledged("a", 3, _time.GetTimestamp()); // a late answer to an older message
        Assert.Equal(5ul, tracker.CommitIndex);
        Assert.Equal(5ul, tracker.MatchIndex("a"));
        // A replica joins only once it holds everything committed.
        Assert.Throws<ArgumentException>(() => tracker.Add("b", 4, _time.GetTimestamp()));
        tracker.Add("b", 5, _time.GetTimestamp());
        Assert.Equal(5ul, tracker.CommitIndex);
    }

    [Fact]
    public void Removing_a_replica_that_stopped_answering_lets_commits_continue()
    {
        var tracker = Tracker("a", "b");
        tracker.LocalDurable(10);
        tracker.Acknowledged("a", 10, _time.GetTimestamp());
        Assert.Equal(0ul, tracker.CommitIndex);
        Assert.True(tracker.Remove("b"));
        Assert.Equal(10ul, tracker.CommitIndex);
        Assert.Throws<ArgumentException>(() => tracker.Remove("p"));
    }

    [Fact]
    public void Acknowledgements_of_silos_outside_the_configuration_count_for_nothing()
    {
        var tracker = Tracker("a");
        tracker.LocalDurable(3);
        Assert.False(tracker.Acknowledged("x", 3, _time.GetTimestamp()));
        Assert.Equal(0ul, tracker.CommitIndex);
    }

    [Fact]
    public void The_lease_is_held_only_while_every_other_replica_acknowledged_a_message_sent_within_it()
    {
        var tracker = Tracker("a", "b");
        Assert.False(tracker.HoldsLease()); // nothing acknowledged yet
        var sent = _time.GetTimestamp();
        tracker.Acknowledged("a", 0, sent);
        Assert.False(tracker.HoldsLease()); // b has not answered
        tracker.Acknowledged("b", 0, sent);
        Assert.True(tracker.HoldsLease());
        _time.Advance(Lease - TimeSpan.FromMilliseconds(1));
        Assert.True(tracker.HoldsLease());
        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.False(tracker.HoldsLease());
    }

    [Fact]
    public void The_lease_runs_from_the_send_of_the_message_not_from_its_acknowledgement()
    {
        var tracker = Tracker("a");
        var sent = _time.GetTimestamp();
        _time.Advance(TimeSpan.FromSeconds(3)); // the message (or its answer) was slow
        tracker.Acknowledged("a", 0, sent);
        Assert.True(tracker.HoldsLease());
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.False(tracker.HoldsLease());
    }

    [Fact]
    public void A_configuration_of_one_replica_holds_the_lease_alone()
    {
        var tracker = Tracker();
        Assert.True(tracker.HoldsLease());
        tracker.LocalDurable(4);
        Assert.Equal(4ul, tracker.CommitIndex);
    }

    [Fact]
    public void Unresponsive_lists_replicas_silent_for_the_timeout_and_never_the_primary()
    {
        var tracker = Tracker("a", "b");
        var timeout = TimeSpan.FromSeconds(6);
        _time.Advance(TimeSpan.FromSeconds(5));
        tracker.Acknowledged("a", 0, _time.GetTimestamp());
        Assert.Empty(tracker.Unresponsive(timeout));
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(["b"], tracker.Unresponsive(timeout));
        _time.Advance(TimeSpan.FromSeconds(5));
        Assert.Equal(["a", "b"], tracker.Unresponsive(timeout).Order());
    }
}
