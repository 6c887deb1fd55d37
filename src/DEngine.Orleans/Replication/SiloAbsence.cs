namespace DEngine.Orleans.Replication;

/// <summary>
/// How long each silo a primary cares about has been away (not an active member), by the primary's
/// clock: the basis of <see cref="Configuration.ReplicationOptions.ReplaceAfter"/>.
/// </summary>
/// <remarks>
/// A silo already away when this primary started counts from that start: a new primary never replaces
/// sooner than ReplaceAfter after it took over, which errs toward waiting (no copy is built for a silo
/// that may be back in a moment). Not thread-safe: used on the primary grain's scheduler.
/// </remarks>
public sealed class SiloAbsence(TimeProvider time)
{
    private readonly Dictionary<string, long> _awaySince = new(StringComparer.Ordinal);

    /// <summary>Records whether each of <paramref name="silos"/> is active now; silos not listed are no longer tracked.</summary>
    public void Observe(IEnumerable<string> silos, Func<string, bool> isActive)
    {
        ArgumentNullException.ThrowIfNull(silos);
        ArgumentNullException.ThrowIfNull(isActive);
        var now = time.GetTimestamp();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var silo in silos)
        {
            if (!seen.Add(silo))
            {
                continue;
            }
            if (isActive(silo))
            {
                _awaySince.Remove(silo);
            }
            else
            {
                _awaySince.TryAdd(silo, now);
            }
        }
        foreach (var silo in _awaySince.Keys.Where(s => !seen.Contains(s)).ToArray())
        {
            _awaySince.Remove(silo);
        }
    }

    /// <summary>How long <paramref name="silo"/> has been away, or null when it was active at the last <see cref="Observe"/>.</summary>
    public TimeSpan? AwayFor(string silo) =>
        _awaySince.TryGetValue(silo, out var since) ? time.GetElapsedTime(since) : null;
}
