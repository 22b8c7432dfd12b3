package report

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// plot is the chart's geometry, computed here and drawn by the page's
// template: calls per bucket, one line per caller, a point per bucket (so
// a period of one bucket still shows a mark), refusals ringed in red, a
// y-axis from zero with round ticks, and the bucket size named.
type plot struct {
	Width, Height            int
	Left, Right, Top, Bottom int
	TickX, XTickY, LegendY   int
	MidX, MidY               int
	Bucket, Start, End       string
	YTicks                   []tick
	Series                   []series
}

type tick struct {
	Y     float64
	Label string
}

type series struct {
	Caller, Color, Points string
	LegendX               int
	Marks                 []mark
}

type mark struct {
	X, Y           float64
	Calls, Refused int
}

var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"}

func (r *Report) plot() plot {
	p := plot{Width: 820, Height: 320, Left: 70, Right: 790, Top: 20, Bottom: 250}
	p.TickX, p.XTickY, p.LegendY = p.Left-6, p.Bottom+16, p.Bottom+50
	p.MidX, p.MidY = (p.Left+p.Right)/2, (p.Top+p.Bottom)/2
	p.Bucket = bucketName(r.BucketSeconds)
	if len(r.buckets) == 0 {
		return p
	}
	bs := r.BucketSeconds
	first, last := r.From.Unix()/bs, r.To.Unix()/bs
	n := int(last - first + 1)
	p.Start = time.Unix(first*bs, 0).UTC().Format("2006-01-02 15:04:05")
	p.End = time.Unix((last+1)*bs, 0).UTC().Format("2006-01-02 15:04:05")
	callers := make([]string, 0, len(r.buckets))
	peak := 1
	for c, s := range r.buckets {
		callers = append(callers, c)
		for _, v := range s {
			peak = max(peak, v[0])
		}
	}
	sort.Strings(callers)
	step := niceStep(peak)
	top := int(math.Ceil(float64(peak)/float64(step))) * step
	y := func(v int) float64 { return float64(p.Bottom) - float64(v)*float64(p.Bottom-p.Top)/float64(top) }
	x := func(i int) float64 {
		if n == 1 {
			return float64(p.Left+p.Right) / 2
		}
		return float64(p.Left) + float64(i)*float64(p.Right-p.Left)/float64(n-1)
	}
	for v := 0; v <= top; v += step {
		p.YTicks = append(p.YTicks, tick{Y: y(v), Label: fmt.Sprint(v)})
	}
	for ci, c := range callers {
		s := series{Caller: c, Color: palette[ci%len(palette)], LegendX: p.Left + ci*150}
		var pts []string
		for i := 0; i < n; i++ {
			v := r.buckets[c][first+int64(i)]
			calls, refused := 0, 0
			if v != nil {
				calls, refused = v[0], v[1]
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(calls)))
			if calls > 0 {
				s.Marks = append(s.Marks, mark{X: x(i), Y: y(calls), Calls: calls, Refused: refused})
			}
		}
		s.Points = strings.Join(pts, " ")
		p.Series = append(p.Series, s)
	}
	return p
}

// niceStep is a tick step of 1, 2 or 5 times a power of ten that splits
// 0..peak into at most five steps.
func niceStep(peak int) int {
	for mag := 1; ; mag *= 10 {
		for _, m := range []int{1, 2, 5} {
			if peak <= 5*m*mag {
				return m * mag
			}
		}
	}
}

// maxBuckets is the most buckets the chart draws.
const maxBuckets = 120

// ladder are the bucket sizes, in seconds, the chart chooses from.
var ladder = []int64{1, 5, 15, 30, 60, 5 * 60, 15 * 60, 30 * 60, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400}

// count adds calls and refusals to caller's bucket at at.
func (r *Report) count(caller string, at time.Time, calls, refused int) {
	r.fit()
	series := r.buckets[caller]
	if series == nil {
		series = map[int64]*[2]int{}
		r.buckets[caller] = series
	}
	b := at.Unix() / r.BucketSeconds
	if series[b] == nil {
		series[b] = &[2]int{}
	}
	series[b][0] += calls
	series[b][1] += refused
}

// fit coarsens every series to the next bucket size while the period
// (From to To) needs more than maxBuckets buckets.
func (r *Report) fit() {
	first, last := r.From.Unix(), r.To.Unix()
	for (last/r.BucketSeconds - first/r.BucketSeconds + 1) > maxBuckets {
		next := r.BucketSeconds
		for _, b := range ladder {
			if b > r.BucketSeconds {
				next = b
				break
			}
		}
		if next == r.BucketSeconds {
			break // a week a bucket: more than two years draw wider
		}
		for c, series := range r.buckets {
			merged := map[int64]*[2]int{}
			for b, n := range series {
				nb := b * r.BucketSeconds / next
				if merged[nb] == nil {
					merged[nb] = &[2]int{}
				}
				merged[nb][0] += n[0]
				merged[nb][1] += n[1]
			}
			r.buckets[c] = merged
		}
		r.BucketSeconds = next
	}
}
