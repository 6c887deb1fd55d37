using DEngine.Orleans.Replication;
using Orleans;

namespace DEngine.Orleans.Tests.Replication;

/// <summary>
/// A fault-injecting filter on every silo of the replicated test cluster: replication messages of a
/// partition from a given primary silo, or to a given replica, fail on arrival (as if the link between
/// them were down), until healed. Nothing else is touched: membership, the record store and clients
/// still reach every silo.
/// </summary>
public sealed class ReplicationFaults : IIncomingGrainCallFilter
{
    private readonly object _gate = new();
    private (int Partition, string? Primary, string? Replica)? _split;
    private long _dropped;

    /// <summary>Messages dropped so far.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>From now on every replication message of <paramref name="partition"/> sent by <paramref name="primary"/> fails.</summary>
    public void Split(int partition, string primary)
    {
        lock (_gate)
        {
            _split = (partition, primary, null);
        }
    }

    /// <summary>From now on every replication message of <paramref name="partition"/> to <paramref name="replica"/>'s copy fails, whoever sends it (as if that silo were gone, for this partition only).</summary>
    public void Silence(int partition, string replica)
    {
        lock (_gate)
        {
            _split = (partition, null, replica);
        }
    }

    /// <summary>Lets every message through again.</summary>
    public void Heal()
    {
        lock (_gate)
        {
            _split = null;
        }
    }

    /// <inheritdoc />
    public Task Invoke(IIncomingGrainCallContext context)
    {
        if (context.MethodName == nameof(IReplicaGrain.Append) && context.Request.GetArgument(0) is AppendRequest request)
        {
            lock (_gate)
            {
                if (_split is { } split && split.Partition == request.Partition && (split.Primary is null || split.Primary == request.Primary)
                    && (split.Replica is null || context.TargetId.Key.ToString() == ReplicaKey.Of(split.Partition, split.Replica)))
                {
                    Interlocked.Increment(ref _dropped);
                    throw new TimeoutException($"fault injected: the link from {request.Primary} to {context.TargetId.Key} is down for partition {request.Partition}");
                }
            }
        }
        return context.Invoke();
    }
}
