# The picture of scripts/demo.sh, from the per-second samples it wrote:
#   gnuplot -e "csv = 'demo.csv'; png = 'demo.png'; workers = 12; max_wait = 2" \
#           -e "boundaries = '10.02'; limits_4o = 'rpm 500, ...'; limits_mini = 'rpm 1500, ...'" \
#           scripts/demo.gp
# boundaries: the seconds at which a minute of the limiter's clock ended.
set terminal pngcairo size 1000,1200 font "sans,11" noenhanced
set output png
set datafile separator comma
set datafile columnheaders

set multiplot layout 4,1 \
	title sprintf("pg_ratelimit demo: %d workers on gpt-4o and gpt-4o-mini, each acquire waits up to %g s\n%s", \
				  workers, max_wait, "chat jobs have 70 % of every limit of each model, summaries the rest") \
	font "sans,13"
set grid
set key outside right top vertical Left reverse
set lmargin 10
set rmargin 36
set xrange [0:*]
set autoscale xfixmax
set xtics 5 nomirror
set mxtics 5
set ytics nomirror

# a minute of the limiter ends: its per-minute windows start empty
do for [b in boundaries] {
	set arrow from b + 0, graph 0 to b + 0, graph 1 nohead lw 1.5 dt 2 lc rgb "#444444"
}

set title "Calls admitted per second on each model"
set ylabel "admitted per second"
set yrange [0:*]
set offsets 0, 0, graph 0.15, 0
do for [b in boundaries] {
	set label "a new minute: windows reset" at b + 0.2, graph 0.94 left textcolor rgb "#444444"
}
plot csv using "second":"gpt-4o admitted/s" with fsteps lw 2 lc rgb "#1f77b4" title "gpt-4o", \
	 '' using "second":"gpt-4o-mini admitted/s" with fsteps lw 2 lc rgb "#ff7f0e" title "gpt-4o-mini"
unset label
set offsets 0, 0, 0, 0

set title "Workers waiting in the server, and calls refused after waiting max_wait"
set ylabel "workers; calls per second"
set yrange [0:workers + 1]
plot csv using "second":"waiting" with lines lw 2 lc rgb "#555555" title "waiting (sampled)", \
	 '' using "second":"refused/s" with fsteps lw 2 lc rgb "#d62728" title "refused per second"

set ylabel "% of the limit"
set yrange [0:110]
set ytics 0, 25

set title "openai/gpt-4o: use of each limit (" . limits_4o . ")"
plot 100 with lines lw 1.5 lc rgb "#b00000" title "the limit", \
	 csv using "second":"gpt-4o rpm %" with lines lw 2 lc rgb "#2ca02c" title "requests this minute (rpm)", \
	 '' using "second":"gpt-4o tpm %" with lines lw 2 lc rgb "#9467bd" title "tokens this minute (tpm)", \
	 '' using "second":"gpt-4o rpd %" with lines lw 2 lc rgb "#8c564b" title "requests today (rpd)", \
	 '' using "second":"gpt-4o concurrency %" with lines lw 2 lc rgb "#17becf" title "in flight (sampled)"

set xlabel "seconds since the start"
set title "openai/gpt-4o-mini: use of each limit (" . limits_mini . ")"
plot 100 with lines lw 1.5 lc rgb "#b00000" title "the limit", \
	 csv using "second":"gpt-4o-mini rpm %" with lines lw 2 lc rgb "#2ca02c" title "requests this minute (rpm)", \
	 '' using "second":"gpt-4o-mini tpm %" with lines lw 2 lc rgb "#9467bd" title "tokens this minute (tpm)", \
	 '' using "second":"gpt-4o-mini concurrency %" with lines lw 2 lc rgb "#17becf" title "in flight (sampled)"

unset multiplot
