using DEngine.Orleans.Configuration;
using DEngine.Orleans.Partitions;

namespace DEngine.Orleans.Tests.Balance;

/// <summary>
/// When a new primary may serve reads without waiting out the old primary's lease
/// (<see cref="ReplicatedActivation.LeaseWait"/>): only after a clean handover to it, which the
/// stored configuration records; every other takeover waits.
/// </summary>
public sealed class TakeoverLeaseTests
{
    private static readonly TimeSpan ReadDelay = TimeSpan.FromSeconds(4.2);
    private static readonly ReplicaId A = new("a", "ia");
    private static readonly ReplicaId B = new("b", "ib");
    private static readonly ReplicaId C = new("c", "ic");

    /// <summary>What <see cref="ReplicatedPrimary.HandOverAsync"/> stores: the next version naming <paramref name="to"/>, marked as handed over by <paramref name="from"/>.</summary>
    private static PartitionConfiguration HandedOver(ReplicaId from, ReplicaId to) =>
        new PartitionConfiguration(7, from, [A, B, C]).WithPrimary(to).Next() with { HandedOverBy = from };

    [Fact]
    public void A_new_primary_named_by_a_clean_handover_serves_reads_without_waiting_out_the_old_lease()
    {
        Assert.Equal(TimeSpan.Zero, ReplicatedActivation.LeaseWait(HandedOver(A, B), "b", ownLeaseOnly: false, ReadDelay, TimeSpan.FromSeconds(0.5)));
    }

    [Fact]
    public void A_takeover_after_a_crash_waits_out_the_old_primarys_lease()
    {
        // The old primary named itself (nobody handed over): its lease may still run.
        var stored = new PartitionConfiguration(8, A, [A, B, C]);
        Assert.Equal(TimeSpan.FromSeconds(3.7), ReplicatedActivation.LeaseWait(stored, "b", ownLeaseOnly: false, ReadDelay, TimeSpan.FromSeconds(0.5)));
    }

    [Fact]
    public void A_silo_taking_over_a_handover_meant_for_another_silo_waits_out_the_lease()
    {
        // Handed to b, but c takes over (b died before it activated): c waits.
        Assert.Equal(TimeSpan.FromSeconds(3.7), ReplicatedActivation.LeaseWait(HandedOver(A, B), "c", ownLeaseOnly: false, ReadDelay, TimeSpan.FromSeconds(0.5)));
    }

    [Fact]
    public void A_configuration_change_after_a_handover_carries_no_handover_mark()
    {
        // The new primary's maintenance edits (drop or add a replica) must not pass the mark on.
        var edited = HandedOver(A, B).Without("c").Next();
        Assert.Null(edited.HandedOverBy);
        Assert.Equal(TimeSpan.FromSeconds(3.7), ReplicatedActivation.LeaseWait(edited, "b", ownLeaseOnly: false, ReadDelay, TimeSpan.FromSeconds(0.5)));
        Assert.NotEqual(HandedOver(A, B), HandedOver(A, B) with { HandedOverBy = null });
    }
}
